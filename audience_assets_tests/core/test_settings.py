"""Settings build each engine's policy once, from the environment, and the policy reaches the engine whole: the
value a deployment sets is the value the client, the uploader and the resources use, and an unset variable
means the policy's own default (one default per setting, in `core.policies`)."""

from __future__ import annotations

import pytest

from audience_assets.core.policies import InflationLimits, MetaPolicy
from audience_assets.core.settings import Settings, SettingsError, duckdb_limits
from audience_assets.defs.resources import build_resources


def test_unset_variables_mean_the_policies_defaults():
    settings = Settings.from_env({})
    assert settings.meta == MetaPolicy() and settings.inflation == InflationLimits()
    assert settings.meta.throttle_max_seconds == 900.0 and settings.meta.throttle_base_seconds == 60.0
    assert settings == Settings(data_dir=settings.data_dir)  # the dataclass's defaults are the same ones


def test_a_lower_throttle_cap_lowers_the_first_back_off_with_it():
    policy = Settings.from_env({"META_THROTTLE_MAX_SECONDS": "300", "META_UPLOAD_DEADLINE_SECONDS": "120"}).meta
    assert (policy.throttle_max_seconds, policy.throttle_base_seconds, policy.deadline_seconds) == (300.0, 20.0, 120.0)
    assert MetaPolicy(throttle_max_seconds=300, throttle_base_seconds=5).throttle_base_seconds == 5  # given wins


def test_the_meta_resource_hands_the_settings_policy_to_its_client(tmp_path):
    environment = {
        "AUDIENCE_DATA_DIR": str(tmp_path),
        "META_ACCESS_TOKEN": "t0ken",
        "META_THROTTLE_MAX_SECONDS": "450",
        "META_UPLOAD_DEADLINE_SECONDS": "7200",
    }
    settings = Settings.from_env(environment)
    meta = build_resources(settings)["meta"]
    assert meta.policy() == settings.meta == MetaPolicy(throttle_max_seconds=450, deadline_seconds=7200)
    client = type(meta)(access_token="t0ken", ad_account_id="act_1", **_chosen(meta)).client()
    try:
        assert client.policy == settings.meta and client.pacer.max_pause == 450 and client.pacer.base_pause == 30
    finally:
        client.close()


def test_the_sandbox_policy_is_scaled_to_a_demos_clock(tmp_path):
    meta = build_resources(Settings.from_env({"AUDIENCE_DATA_DIR": str(tmp_path)}))["meta"]
    policy = meta.policy()
    assert (policy.throttle_max_seconds, policy.throttle_base_seconds, policy.settle_seconds) == (15.0, 1.0, 20.0)
    assert policy.deadline_seconds == MetaPolicy().deadline_seconds and policy.concurrency == MetaPolicy().concurrency


def test_variables_read_where_they_are_used_are_validated_by_settings_too():
    assert duckdb_limits({}) == (None, None)
    assert duckdb_limits({"AUDIENCE_DUCKDB_MEMORY_LIMIT": "800MiB", "AUDIENCE_DUCKDB_THREADS": "2"}) == ("800MiB", 2)
    with pytest.raises(SettingsError, match="AUDIENCE_DUCKDB_THREADS='300' is out of range"):
        Settings.from_env({"AUDIENCE_DUCKDB_THREADS": "300"})


def _chosen(meta) -> dict[str, float]:
    return {"throttle_max_seconds": meta.throttle_max_seconds, "upload_deadline_seconds": meta.upload_deadline_seconds}
