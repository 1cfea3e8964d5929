"""Meta, current and compliant: the version table and its lifecycle, Meta's answers about an audience's health
judged per code, and the account preflight (status, terms, permissions) before any row is sent."""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
import pytest

from audience_assets.core.meta.client import DEFAULT_API_VERSION, GraphClient
from audience_assets.core.meta.errors import MetaPreflightError
from audience_assets.core.meta.health import delivery_health, operation_health
from audience_assets.core.meta.manager import AudienceManager
from audience_assets.core.meta.versions import default_version, lifecycle, live_versions, today, versions
from audience_assets.defs.activation import checks
from audience_assets.standins.graph_sandbox import GraphSandbox, SandboxConfig

TOKEN, ACCOUNT = "tok-Health-1", "act_3000000001"
V25_EXPIRES = dt.date(2027, 2, 23)


def test_the_default_version_was_checked_and_is_live_today():
    assert DEFAULT_API_VERSION == default_version()
    chosen = {v.name: v for v in versions()}[DEFAULT_API_VERSION]
    assert chosen.contract_checked and chosen in live_versions(today())
    assert lifecycle(DEFAULT_API_VERSION, today()).state in ("current", "expiring")


def test_one_day_before_expiry_warns_and_one_day_after_blocks():
    before, after = lifecycle("v25.0", V25_EXPIRES - dt.timedelta(days=1)), lifecycle("v25.0", V25_EXPIRES)
    assert (before.state, before.days_left, before.blocked) == ("expiring", 1, False)
    assert "expires on 2027-02-23, in 1 days: set META_API_VERSION" in before.message()
    assert after.blocked and "expired on 2027-02-23" in after.message() and "Nothing is sent" in after.message()
    warning, block = checks.api_version(before), checks.api_version(after)
    assert (warning.passed, warning.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert (block.passed, block.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert lifecycle("v25.0", V25_EXPIRES - dt.timedelta(days=91)).state == "current"
    assert lifecycle("v99.0", today()).state == "unknown" and not checks.api_version(lifecycle("v99.0", today())).passed


@pytest.mark.parametrize(
    ("code", "severity", "advice"),
    [
        (200, None, ""),
        (100, "warn", "expiring"),
        (411, "warn", "low match rate"),
        (412, "warn", "many invalid entries"),
        (441, "warn", "still populating"),
        (450, "warn", "stale"),
        (470, "error", "ad account that created it is inactive"),
        (471, "error", "flagged"),
    ],
)
def test_each_operation_status_is_judged_with_metas_words(code, severity, advice):
    judged = operation_health({"code": code, "description": f"Meta words {code}"})
    assert judged.severity == severity and advice in judged.message()
    if severity:
        assert f'(Meta: "Meta words {code}")' in judged.message()
        result = checks.health(checks.OPERATION_STATUS, judged)
        assert not result.passed and result.description == judged.message()


def test_delivery_status_explains_too_small_with_the_audiences_own_numbers():
    assert delivery_health({"code": 200, "description": "ready"}, rows_held=5, approximate_count=-1).healthy
    small = delivery_health({"code": 300, "description": "too small"}, rows_held=180, approximate_count=-1)
    assert small.severity == "warn" and "holds 180 rows" in small.message() and "fewer than 1,000" in small.message()
    unusable = delivery_health({"code": 400, "description": "unusable"}, rows_held=9, approximate_count=-1)
    assert unusable.severity == "error"


def client_and_sandbox(**config) -> tuple[GraphClient, GraphSandbox]:
    accounts = {ACCOUNT: {"name": "a", "tos_accepted": True, **config.pop("account", {})}}
    sandbox = GraphSandbox(config=SandboxConfig(tokens={TOKEN: ["*"]}, ad_accounts=accounts, **config))
    client = GraphClient(access_token=TOKEN, transport=sandbox.transport(), base_url="http://127.0.0.1")
    return client, sandbox


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ({"account": {"account_status": 2}}, "is disabled (account_status 2) and cannot take uploads"),
        ({"account": {"account_status": 3}}, "unsettled (a payment is due)"),
        ({"permissions": {TOKEN: ["ads_read"]}}, "lacks the ads_management permission"),
    ],
)
def test_the_preflight_stops_before_any_row_with_the_fix(setup, expected):
    client, sandbox = client_and_sandbox(**setup)
    manager = AudienceManager(client, ACCOUNT)
    audience_id = manager.create(
        "Preflight", description="", customer_file_source="USER_PROVIDED_ONLY", retention_days=180
    )["id"]
    with pytest.raises(MetaPreflightError, match=re.escape(expected)):
        manager.preflight(audience_id)
    assert sandbox.member_keys(audience_id) == set()


def test_a_populating_audience_is_read_again_with_growing_pauses_until_settled():
    client, sandbox = client_and_sandbox()
    manager = AudienceManager(client, ACCOUNT)
    audience_id = manager.create(
        "Populating", description="", customer_file_source="USER_PROVIDED_ONLY", retention_days=180
    )["id"]
    sandbox.set_health(audience_id, populating_reads=3)
    pauses: list[float] = []
    state = manager.read_settled(audience_id, max_seconds=40, sleep=pauses.append)
    assert state["operation_status"]["code"] == 200 and state["populating_polls"] == 3
    assert pauses == [1.0, 2.0, 4.0]
    sandbox.set_health(audience_id, populating_reads=1_000)
    state = manager.read_settled(audience_id, max_seconds=0.2, sleep=lambda s: None)
    assert state["operation_status"]["code"] == 441  # bounded: reported as populating, not waited on forever


def test_an_upgraded_retired_version_is_recorded_from_metas_header():
    sandbox = GraphSandbox(config=SandboxConfig(tokens={TOKEN: ["*"]}, ad_accounts={ACCOUNT: {}}, upgrade_retired=True))
    client = GraphClient(
        access_token=TOKEN, transport=sandbox.transport(), base_url="http://127.0.0.1", api_version="v24.0"
    )
    client.get("me", fields="id")
    assert client.stats.version_warning == "The call has been auto-upgraded to v25.0 as v24.0 has been deprecated"
    result = checks.version_warning("v24.0", client.stats.version_warning)
    assert not result.passed and "Set META_API_VERSION" in result.description
    assert checks.version_warning("v26.0", "").passed


@pytest.mark.parametrize(
    ("delivery", "operation", "check", "severity", "words"),
    [
        ((300, "This audience is too small."), None, checks.DELIVERY_STATUS, "WARN", "too small or inactive"),
        ((400, "This audience can't be used."), None, checks.DELIVERY_STATUS, "ERROR", "unusable for delivery"),
        (None, (100, "Expiring"), checks.OPERATION_STATUS, "WARN", "expiring"),
        (None, (411, "Low match rate"), checks.OPERATION_STATUS, "WARN", "low match rate"),
        (None, (412, "Many invalid entries"), checks.OPERATION_STATUS, "WARN", "many invalid entries"),
        (None, (441, "Populating"), checks.OPERATION_STATUS, "WARN", "still populating"),
        (None, (450, "Stale"), checks.OPERATION_STATUS, "WARN", "stale"),
        (None, (470, "Account inactive"), checks.OPERATION_STATUS, "ERROR", "account that created it is inactive"),
        (None, (471, "Flagged"), checks.OPERATION_STATUS, "ERROR", "flagged"),
    ],
)
def test_each_status_injected_through_the_sandbox_becomes_its_check(delivery, operation, check, severity, words):
    """What the sandbox reports for an audience (as Meta's Graph API shapes it), read by the client and judged:
    the intended check result, with Meta's words and what to do."""
    client, sandbox = client_and_sandbox()
    manager = AudienceManager(client, ACCOUNT)
    audience_id = manager.create(
        "Health", description="", customer_file_source="USER_PROVIDED_ONLY", retention_days=180
    )["id"]
    sandbox.set_health(audience_id, delivery=delivery, operation=operation)
    state = manager.read(audience_id)
    if check == checks.DELIVERY_STATUS:
        judged = delivery_health(state["delivery_status"], rows_held=0, approximate_count=-1)
    else:
        judged = operation_health(state["operation_status"])
    result = checks.health(check, judged)
    said = (delivery or operation)[1]
    assert not result.passed and result.severity.value == severity
    assert words in result.description and f'(Meta: "{said}")' in result.description
