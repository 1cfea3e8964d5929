"""Uploads under failure: injected faults, a killed upload process, and small deltas.

Everything runs against the Graph API sandbox over real HTTP on loopback, through the same functions the
`meta_custom_audience` asset uses (plan -> store -> deliver), and ends by comparing the sandbox's member
set with the intended set computed independently in Python.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from audience_assets.core import layout
from audience_assets.core.meta.binding import load_binding
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.delivery import deliver
from audience_assets.core.policies import MetaPolicy
from audience_assets.core.settings import SANDBOX_AD_ACCOUNT, SANDBOX_TOKEN
from audience_assets.core.store import LocalStore
from audience_assets.standins.graph_sandbox import Faults, GraphSandbox, SandboxConfig
from audience_assets_tests.core.meta.uploads import FakeClock, expected_members, plan, spec

pytestmark = pytest.mark.slow
AUDIENCE = "test_audience"
SEED = 2  # a fault sequence that lets the lookups through and then dead-letters some batches


# ##### HELPERS


def client_for(url: str, waits: list[float] | None = None) -> GraphClient:
    """A client on a fake clock: its waits are recorded and move the clock (the test needs no wall time)."""
    clock = FakeClock(waits)
    return GraphClient(
        access_token=SANDBOX_TOKEN,
        base_url=url,
        sleep=clock.sleep,
        clock=clock,
        seed=1,
        policy=MetaPolicy(timeout_seconds=5, transient_attempts=12),
    )


def sync(storage: LocalStore, url: str, mode: str, ids, *, chunk_rows: int = 10_000, waits=None):
    audience_spec = spec(mode, chunk_rows=chunk_rows)
    upload = plan(storage, AUDIENCE, audience_spec, ids)
    client = client_for(url, waits)
    try:
        return deliver(storage, AUDIENCE, audience_spec, upload, client, ad_account_id=SANDBOX_AD_ACCOUNT), client
    finally:
        client.close()


def batch_resends(state: Path, kind: str) -> int:
    with sqlite3.connect(state) as db:
        return db.execute(
            "SELECT coalesce(sum(b.times - 1), 0) FROM batches b JOIN sessions s USING (audience, session_id) "
            "WHERE s.kind = ?",
            (kind,),
        ).fetchone()[0]


# ##### TESTS


def test_faults_on_a_fifth_of_requests_still_end_with_the_exact_set(tmp_path: Path):
    """200,000 rows in mirror mode, then a replace, with 5xx, timeouts (before and after processing) and
    throttles injected: the audience ends exactly as intended and no replace batch is sent twice."""
    faults = Faults(
        server_error=0.08, timeout_before=0.05, timeout_after=0.05, throttle=0.08, delay_seconds=0.01, seed=5
    )
    sandbox = GraphSandbox(tmp_path / "graph.sqlite", SandboxConfig(faults=faults))
    storage = LocalStore(str(tmp_path / "data"))
    with sandbox.serve() as server:
        first = range(200_000)
        delivery, client = sync(storage, server.url, "mirror", first)
        assert sandbox.member_keys(delivery.audience_id) == expected_members(first)
        failed = client.stats.throttled + client.stats.transient_failures
        assert failed / client.stats.requests >= 0.2, (failed, client.stats.requests)

        replacement = range(50_000, 180_000)
        delivery, client = sync(storage, server.url, "replace", replacement)
        assert sandbox.member_keys(delivery.audience_id) == expected_members(replacement)
        assert sandbox.resent_replace_batches() == 0
        assert (client.stats.throttled + client.stats.transient_failures) / client.stats.requests >= 0.2
    sandbox.close()


def test_a_one_percent_change_sends_about_one_percent(tmp_path: Path):
    sandbox = GraphSandbox(tmp_path / "graph.sqlite")
    storage = LocalStore(str(tmp_path / "data"))
    with sandbox.serve() as server:
        before = set(range(100_000))
        full, _ = sync(storage, server.url, "mirror", before)
        full_rows = sum(op.rows for op in full.result.operations)
        after = (before - set(range(0, 1_000, 2))) | set(range(100_000, 100_500))  # 500 leave, 500 join
        delta, _ = sync(storage, server.url, "mirror", after)
        sent = sum(op.rows for op in delta.result.operations)
        assert sent == 1_000 and sent <= 0.011 * full_rows
        assert {op.kind for op in delta.result.operations} == {"add", "remove"}
        assert sandbox.member_keys(delta.audience_id) == expected_members(after)
        assert (tmp_path / "data" / layout.confirmed(AUDIENCE, delta.audience_id)).is_file()
        again, _ = sync(storage, server.url, "mirror", after)  # nothing changed: nothing is sent
        assert again.result.operations == []
    sandbox.close()


def test_dead_lettered_batches_are_resent_by_the_next_run_and_cleared(tmp_path: Path):
    """Batches that exhaust their retries are recorded with the error (never the rows); re-materializing
    the audience (the same plan) sends exactly those again and clears their dead letters."""
    from audience_assets.core.meta.ledger import UploadLedger
    from audience_assets.core.meta.uploader import UploadIncomplete

    state = tmp_path / "graph.sqlite"
    storage = LocalStore(str(tmp_path / "data"))
    ids = range(30_000)
    audience_spec = spec("mirror", chunk_rows=1_000)
    upload = plan(storage, AUDIENCE, audience_spec, ids)
    flaky = GraphSandbox(state, SandboxConfig(faults=Faults(server_error=0.5, seed=SEED)))
    with flaky.serve() as server:  # one batch at a time, so the seeded faults fall on the same requests every run
        clock = FakeClock()
        client = GraphClient(
            access_token=SANDBOX_TOKEN,
            base_url=server.url,
            sleep=clock.sleep,
            clock=clock,
            policy=MetaPolicy(transient_attempts=2, timeout_seconds=5, concurrency=1),
        )
        with pytest.raises(UploadIncomplete, match="were not acknowledged"):
            deliver(storage, AUDIENCE, audience_spec, upload, client, ad_account_id=SANDBOX_AD_ACCOUNT)
        client.close()
    flaky.close()
    audience_id = load_binding(storage, AUDIENCE).meta_audience_id
    ledger = UploadLedger(storage, AUDIENCE, audience_id, upload.upload_id)
    dead = ledger.dead_letters()
    assert dead and all(
        d["error_class"] == "transient" and d["code"] == 2 and d["message"] and d["chunk_key"] for d in dead.values()
    )
    assert not re.search(r"[0-9a-f]{64}|@example", json.dumps(dead)), "a dead letter names its chunk, never its rows"
    assert not (tmp_path / "data" / layout.confirmed(AUDIENCE, audience_id)).exists(), (
        "nothing is confirmed while batches are missing"
    )

    healthy = GraphSandbox(state)
    with healthy.serve() as server:
        client = client_for(server.url)
        delivery = deliver(storage, AUDIENCE, audience_spec, upload, client, ad_account_id=SANDBOX_AD_ACCOUNT)
        client.close()
        assert healthy.member_keys(delivery.audience_id) == expected_members(ids)
    assert ledger.dead_letters() == {}
    assert sum(op.batches_sent for op in delivery.result.operations) >= len(dead)
    healthy.close()


@pytest.mark.parametrize("mode", ["mirror", "replace"])
def test_a_token_that_expires_mid_upload_leaves_dead_letters_and_the_next_run_finishes(tmp_path: Path, mode: str):
    """Meta refuses the sixth batch with 190 (the token expired): that batch and every batch not sent yet are
    dead letters (why, code, never rows), nothing else is called with the dead token, nothing is confirmed;
    a run with a working token sends exactly what is missing."""
    from audience_assets.core.meta.ledger import UploadLedger
    from audience_assets.core.meta.uploader import UploadIncomplete

    class Expiring(GraphSandbox):
        batches = 0

        def handle(self, method, raw_path, headers, body):
            if raw_path.split("?")[0].endswith(("/users", "/usersreplace")):
                self.batches += 1
                if self.batches == 6:
                    self.config.expired_tokens.append(SANDBOX_TOKEN)
            return super().handle(method, raw_path, headers, body)

    storage = LocalStore(str(tmp_path / "data"))
    ids, audience_spec = range(20_000), spec(mode, chunk_rows=1_000)
    upload = plan(storage, AUDIENCE, audience_spec, ids)
    expiring = Expiring(tmp_path / "graph.sqlite")
    client = GraphClient(
        access_token=SANDBOX_TOKEN,
        transport=expiring.transport(),
        base_url="http://127.0.0.1",
        policy=MetaPolicy(concurrency=1),
    )
    with pytest.raises(UploadIncomplete, match="expired") as failed:
        deliver(storage, AUDIENCE, audience_spec, upload, client, ad_account_id=SANDBOX_AD_ACCOUNT)
    client.close()
    audience_id = load_binding(storage, AUDIENCE).meta_audience_id
    dead = UploadLedger(storage, AUDIENCE, audience_id, upload.upload_id).dead_letters()
    classes = sorted(d["error_class"] for d in dead.values())
    assert classes == ["fatal"] + ["not_sent"] * 14 and failed.value.dead == 15
    assert next(d for d in dead.values() if d["error_class"] == "fatal")["code"] == 190
    assert expiring.batches == 6, "nothing more was sent with the dead token"
    assert not re.search(r"[0-9a-f]{64}|@example", json.dumps(dead))
    assert not (tmp_path / "data" / layout.confirmed(AUDIENCE, audience_id)).exists()
    expiring.close()

    renewed = GraphSandbox(tmp_path / "graph.sqlite")
    client = GraphClient(access_token=SANDBOX_TOKEN, transport=renewed.transport(), base_url="http://127.0.0.1")
    delivery = deliver(storage, AUDIENCE, audience_spec, upload, client, ad_account_id=SANDBOX_AD_ACCOUNT)
    client.close()
    assert renewed.member_keys(delivery.audience_id) == expected_members(ids)
    assert UploadLedger(storage, AUDIENCE, audience_id, upload.upload_id).dead_letters() == {}
    if mode == "replace":
        assert renewed.resent_replace_batches() == 0
    renewed.close()
