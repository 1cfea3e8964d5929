"""Retention of plaintext CRM exports, and the Meta token read from AWS Secrets Manager."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import time
from pathlib import Path

import boto3
import dagster as dg
import pyarrow.parquet as pq
import pytest

from audience_assets.core import layout
from audience_assets.core.demo import generate
from audience_assets.core.settings import Settings, SettingsError
from audience_assets.core.store import LocalStore, StoredObject
from audience_assets.definitions import build_definitions
from audience_assets.defs.resources import LocalStorage, MetaAudiences
from audience_assets.headless import STAGES, run_pipeline


class MtimeStore(LocalStore):
    """LocalStore dates a file by max(mtime, ctime), and a test cannot set ctime back: this one reads mtime."""

    def list(self, prefix):
        for obj in super().list(prefix):
            mtime = (self.root / obj.key).stat().st_mtime
            yield StoredObject(obj.key, obj.size, dt.datetime.fromtimestamp(mtime, dt.UTC), obj.version)


class MtimeStorage(LocalStorage):
    def store(self) -> MtimeStore:
        return MtimeStore(self.data_dir)


def test_the_retention_job_deletes_old_exports_and_keeps_recent_ones_and_opt_outs(tmp_path: Path):
    old_export = tmp_path / "landing" / "first_party" / "crm_2026-01-01.csv"
    new_export = tmp_path / "landing" / "first_party" / "crm_2026-11-27.csv"
    opt_outs = tmp_path / "landing" / "suppression" / "optouts_2026-01-01.csv"
    for number, path in enumerate((old_export, new_export, opt_outs)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"customer_id,email\nC{number},a{number}@example.com\n")
    month_ago = time.time() - 31 * 86400
    for path in (old_export, opt_outs):
        os.utime(path, (month_ago, month_ago))
        os.utime(path.parent, (month_ago, month_ago))
    defs = build_definitions(Settings(data_dir=tmp_path, demo_data=False, retention_days=30))
    assert defs.resolve_schedule_def("retention_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
    result = defs.resolve_job_def("retention_job").execute_in_process(
        resources={"storage": MtimeStorage(data_dir=str(tmp_path))}
    )
    assert result.success
    assert not old_export.exists() and new_export.exists() and opt_outs.exists()


def test_the_meta_token_can_come_from_secrets_manager(aws, monkeypatch):
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="audience-assets/meta", SecretString=json.dumps({"access_token": "EAAB-secret"}))[
        "ARN"
    ]
    assert MetaAudiences(access_token_secret_id=arn, ad_account_id="act_1").token() == "EAAB-secret"
    plain = secrets.create_secret(Name="audience-assets/meta-plain", SecretString="EAAB-plain\n")["ARN"]
    assert MetaAudiences(access_token_secret_id=plain, ad_account_id="act_1").token() == "EAAB-plain"

    monkeypatch.setenv("META_ACCESS_TOKEN_SECRET_ID", arn)
    monkeypatch.delenv("META_ACCESS_TOKEN", raising=False)
    settings = Settings.from_env()
    assert not settings.meta_sandbox
    meta = build_definitions(
        Settings(data_dir=Path("/nonexistent"), demo_data=False, meta_token_secret_set=True)
    ).resources["meta"]
    assert meta.access_token is None and meta.sandbox_state is None


def age(path: Path, days: float) -> None:
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))


def test_retention_covers_every_plaintext_file_and_loses_nothing(tmp_path: Path):
    """Retention 0: every ingested plaintext file goes right away (opt-outs first reduced to hashes), files
    not yet ingested (new, or re-delivered under the same name) stay, and the next ingestion still has every
    opt-out and keeps the published data."""
    data = tmp_path / "data"
    generate(data, customers=2_000, seed=9)
    landing = data / "landing"
    for path in landing.rglob("*"):  # delivered yesterday (ingested as they are: same versions)
        if path.is_file():
            age(path, 1)
    settings = Settings(data_dir=data, demo_data=False, retention_days=0)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_pipeline(settings, instance, out=io.StringIO(), stages=STAGES[:2])
    opted_out = pq.read_table(data / layout.SUPPRESSION_LIST).num_rows
    acme = next((landing / "partners" / "acme_data").glob("*.csv"))
    replaced = acme.with_name("acme_2020-01-01.csv")  # an old snapshot the current one replaced
    replaced.write_text(acme.read_text())
    age(replaced, 400)
    unread = [landing / "partners" / "acme_data" / "next.csv.part", landing / "partners" / "gamma" / "a.csv"]
    unread[1].parent.mkdir()
    for path in unread:
        path.write_text("email\nb@example.com\n")
        age(path, 1)
    overwritten = next((landing / "first_party").glob("*.csv"))  # re-delivered under the same name
    overwritten.write_text(overwritten.read_text() + "C9999999,new@example.com,,,,,,,,,\n")
    age(overwritten, 1)
    fresh = landing / "suppression" / "optouts_later.csv"  # landed after the last ingestion: never deleted
    fresh.write_text("email\nlate@example.com\n")

    result = (
        build_definitions(settings)
        .resolve_job_def("retention_job")
        .execute_in_process(resources={"storage": MtimeStorage(data_dir=str(data))})
    )
    assert result.success
    left = sorted(p.relative_to(data).as_posix() for p in landing.rglob("*") if p.is_file())
    assert left == [overwritten.relative_to(data).as_posix(), "landing/suppression/optouts_later.csv"]
    observed = result.asset_observations_for_node("delete_expired_plaintext")[0].metadata
    assert observed["retention/deleted"].value == 6 and observed["retention/kept_past_retention"].value == 2
    assert observed["retention/opt_outs_archived"].value == opted_out
    assert "landing/partners/gamma/a.csv" in observed["retention/deleted_keys"].value

    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_pipeline(settings, instance, out=out, stages=STAGES[:2]), out.getvalue()
    assert pq.read_table(data / layout.SUPPRESSION_LIST).num_rows == opted_out + 1  # every opt-out, and the new one
    assert pq.read_table(data / layout.FIRST_PARTY_CUSTOMERS).num_rows > 0  # re-ingested from the kept export
    assert pq.read_table(data / layout.partner_table("acme_data")).num_rows > 0


def test_settings_fail_at_load_naming_the_variable_and_the_range():
    for value, problem in (("-1", "out of range"), ("thirty", "not a whole number"), ("1.5", "not a whole number")):
        with pytest.raises(
            SettingsError,
            match=rf"AUDIENCE_RETENTION_DAYS='{value}' is {problem}; expected whole "
            r"days from 0 to 3650",
        ):
            Settings.from_env({"AUDIENCE_RETENTION_DAYS": value})
    assert Settings.from_env({"AUDIENCE_RETENTION_DAYS": "0"}).retention_days == 0
    bad = {
        "AUDIENCE_DEMO_DATA": "maybe",
        "META_API_VERSION": "25",
        "META_AD_ACCOUNT_ID": "1234",
        "META_GRAPH_URL": "graph.facebook.com",
        "AUDIENCE_DUCKDB_MEMORY_LIMIT": "lots",
        "AUDIENCE_DUCKDB_THREADS": "0",
        "ALERT_WEBHOOK_URL": "hooks.example.com/T0/secret",
        "META_THROTTLE_MAX_SECONDS": "0",
    }
    for name, value in bad.items():
        with pytest.raises(SettingsError, match=name) as caught:
            Settings.from_env({name: value})
        assert "secret" not in str(caught.value)
