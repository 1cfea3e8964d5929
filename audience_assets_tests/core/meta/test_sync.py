"""`core.meta.sync.sync`, the core call behind `meta_custom_audience`: a sync that will not upload (a plan waiting
for a person, an expired API version, removals over the limit) decides so before it connects, so it reads no
token and makes no call; one that uploads connects once, under the audience's lock, and reports its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from audience_assets.core.audience.approval import TRIGGER_TAG
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.sync import MetaTarget, RunScope, SyncHeld, sync
from audience_assets.core.settings import SANDBOX_AD_ACCOUNT, SANDBOX_TOKEN
from audience_assets.core.store import LocalStore
from audience_assets.standins.graph_sandbox import GraphSandbox
from audience_assets_tests.core.meta.uploads import plan, spec

AUDIENCE = "sync_test"
UNATTENDED = {TRIGGER_TAG: "headless"}


def never_connect() -> GraphClient:
    raise AssertionError("a sync that will not upload must not read a token or connect")


@pytest.mark.parametrize(
    ("change", "tags", "expected"),
    [
        ({"approval": "manual"}, UNATTENDED, "awaiting"),
        ({}, {}, "expired"),
    ],
)
def test_a_sync_that_will_not_upload_never_connects(tmp_path: Path, change, tags, expected):
    store = LocalStore(tmp_path)
    audience = spec("add").model_copy(update=change)
    plan(store, AUDIENCE, audience, range(500))
    version = "v26.0" if expected == "awaiting" else "v21.0"  # expired 2025-09-09
    target = MetaTarget(SANDBOX_AD_ACCOUNT, version, never_connect)
    if expected == "awaiting":
        outcome = sync(store, AUDIENCE, audience, target, RunScope("run-1", tags))
        assert outcome.awaiting_approval and outcome.requests == 0 and "waits" in outcome.summary(AUDIENCE)
    else:
        with pytest.raises(SyncHeld, match="v21.0 expired"):
            sync(store, AUDIENCE, audience, target, RunScope("run-1", tags))


def test_a_sync_connects_once_and_reports_what_meta_holds(tmp_path: Path):
    store, sandbox = LocalStore(tmp_path / "data"), GraphSandbox(tmp_path / "graph.sqlite")
    audience = spec("add")
    plan(store, AUDIENCE, audience, range(500))
    connections, published, warned = [], [], []

    def connect() -> GraphClient:
        connections.append(1)
        return GraphClient(access_token=SANDBOX_TOKEN, base_url="http://127.0.0.1", transport=sandbox.transport())

    run = RunScope("run-1", {}, warn=warned.append, publish=published.append)
    outcome = sync(store, AUDIENCE, audience, MetaTarget(SANDBOX_AD_ACCOUNT, "v26.0", connect), run)
    sandbox.close()
    assert connections == [1] and outcome.requests > 0 and not warned
    assert outcome.figures["num_received"] == 500 and outcome.figures["rows_sent"] == 500
    assert published == [outcome.metrics] and outcome.metrics["rows_uploaded"] == 500
