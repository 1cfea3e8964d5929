"""Retention of plaintext CRM exports, and the Meta token read from AWS Secrets Manager."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import boto3
import dagster as dg

from audience_assets.core.settings import Settings
from audience_assets.core.store import LocalStore, StoredObject
from audience_assets.definitions import build_definitions
from audience_assets.defs.resources import LocalStorage, MetaAudiences


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
    for path in (old_export, new_export, opt_outs):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("customer_id,email\nC1,a@example.com\n")
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
