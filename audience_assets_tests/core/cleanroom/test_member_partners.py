"""A partner that is a member of the collaboration (`clean_room.member: true`) associates its own table from its
own account: nothing of it lands with us. Its ingestion reads nothing (even files left under its prefix), the
landing-zone sensor does not watch its prefix, and the local engine, which has no table to match it against,
refuses it by name instead of failing on a missing file. (aws mode with a member partner runs end to end in
e2e/test_aws_mode.py.)"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from audience_assets.core.config import load_config
from audience_assets.core.ingestion.inventory import ignored_objects
from audience_assets.core.ingestion.sources import ingest_source
from audience_assets.core.store import LocalStore
from audience_assets.defs.ingest.sensors import landing_targets
from audience_assets.standins.local_clean_room import local_session
from audience_assets_tests.conftest import copy_config

MEMBER = "beta_insights"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    config_dir = copy_config(tmp_path / "config")
    partners = config_dir / "partners.yaml"
    partners.write_text(
        partners.read_text().replace(f"  {MEMBER}:\n", f"  {MEMBER}:\n    clean_room: {{member: true}}\n")
    )
    return config_dir


@pytest.fixture
def config(config_dir: Path):
    return load_config(config_dir)


def test_nothing_of_a_member_is_read_watched_or_matched_locally(config, tmp_path: Path):
    data = tmp_path / "data"
    left = data / config.sources.partner_prefix(MEMBER) / "stray.csv"
    left.parent.mkdir(parents=True)
    left.write_text("phone_number\n+15551234567\n")
    store = LocalStore(data)

    outcome = ingest_source(store, config, MEMBER)
    assert outcome.member and outcome.files == [] and not outcome.published and not outcome.verdict.blocked
    assert left.exists() and not (data / "staging").exists()  # nothing read, nothing written

    watched = {t.source for t in landing_targets(config)}
    assert MEMBER not in watched and "acme_data" in watched
    (reported,) = ignored_objects(store, config)  # never silently: listed as not read, with why
    assert reported.key.endswith("stray.csv") and "member of the collaboration" in reported.reason

    with contextlib.ExitStack() as stack, pytest.raises(ValueError, match=f"{MEMBER} is a member of the collab"):
        local_session(stack, store, config, MEMBER, tmp_path / "work")


def test_a_member_is_recorded_daily_so_automation_refreshes_its_match(config_dir: Path, tmp_path: Path):
    import datetime as dt

    import dagster as dg

    from audience_assets.core.settings import Settings
    from audience_assets.definitions import build_definitions

    defs = build_definitions(Settings(data_dir=tmp_path / "data", config_dir=config_dir, demo_data=False))
    schedule = defs.resolve_schedule_def("member_partners_daily")
    when = dt.datetime(2026, 12, 8, 5, tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == [MEMBER] and schedule.job_name == "partner_data_job"
