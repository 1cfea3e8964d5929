"""Lookalikes against the Graph sandbox: made once the seed is ready, never twice (found by origin and spec, Meta's
duplicate refusal taken as "already there"), made again when deleted on Meta, and waiting, with the reason,
while the seed is missing, too small or still populating."""

from __future__ import annotations

import json

import duckdb
import pytest

from audience_assets.core import layout
from audience_assets.core.config import Audience
from audience_assets.core.duck import sql_path
from audience_assets.core.meta.binding import bind
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.errors import MetaApiError
from audience_assets.core.meta.lookalikes import (
    CREATED,
    FOUND,
    HELD,
    NEW_SEED,
    RECREATED,
    REFUSED,
    WAITING,
    LookalikeMismatch,
    create,
    ensure_lookalike,
    judged,
    spec_params,
)
from audience_assets.core.meta.manager import AudienceManager
from audience_assets.core.store import LocalStore
from audience_assets.standins.graph_sandbox import GraphSandbox, SandboxConfig

TOKEN, ACCOUNT = "tok-lookalikes", "act_1000000001"
SEED = Audience.model_validate(
    {
        "meta_name": "Seed",
        "select": {"p": {}},
        "lookalikes": [{"country": "US", "ratio": 0.01}, {"country": "GB", "starting_ratio": 0.01, "ratio": 0.05}],
    }
)
US, GB = SEED.lookalikes


@pytest.fixture
def sandbox():
    sandbox = GraphSandbox(config=SandboxConfig(tokens={TOKEN: ["*"]}, ad_accounts={ACCOUNT: {"name": "a"}}))
    yield sandbox
    sandbox.close()


@pytest.fixture
def manager(sandbox):
    client = GraphClient(access_token=TOKEN, transport=sandbox.transport(), base_url="http://127.0.0.1")
    yield AudienceManager(client, ACCOUNT)
    client.close()


def seeded(store: LocalStore, sandbox: GraphSandbox, manager: AudienceManager, tmp_path, people: int) -> str:
    """The seed bound, `people` members on Meta, and the same rows on record as confirmed."""
    seed_id = bind(store, manager, "seed", SEED).meta_audience_id
    sandbox.state.change_members(seed_id, [f"k{i}" for i in range(people)], remove=False)
    confirmed = tmp_path / "confirmed.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT 'r' || range AS row_id FROM range({people})) TO {sql_path(confirmed)} (FORMAT parquet)"
        )
    store.upload(confirmed, layout.confirmed("seed", seed_id))
    return seed_id


def test_a_lookalike_is_made_once_and_read_back_every_run(sandbox, manager, tmp_path):
    store = LocalStore(tmp_path / "store")
    seed_id = seeded(store, sandbox, manager, tmp_path, 150)
    made = ensure_lookalike(store, manager, "seed", SEED, GB)
    assert (made.event, made.seed.rows) == (CREATED, 150)
    assert sandbox.lookalikes(seed_id) == [
        {"id": made.lookalike_id, "country": "GB", "starting_ratio": 0.01, "ratio": 0.05}
    ]
    assert made.state["lookalike_spec"]["origin"][0]["id"] == seed_id  # Meta's own read of it
    record = json.loads(store.get_bytes(layout.lookalike("seed", "GB-1-5")))
    assert (record["seed_audience_id"], record["seed_rows"]) == (seed_id, 150)
    assert record["seed_version"] == store.version(layout.confirmed("seed", seed_id))  # the seed it was made from
    again = ensure_lookalike(store, manager, "seed", SEED, GB)
    assert (again.event, again.lookalike_id) == (HELD, made.lookalike_id)
    assert len(sandbox.lookalikes(seed_id)) == 1
    assert all(j.healthy for j in judged(again).values())


def test_a_lost_record_finds_the_lookalike_by_its_spec_and_a_deleted_one_is_made_again(sandbox, manager, tmp_path):
    store = LocalStore(tmp_path / "store")
    seed_id = seeded(store, sandbox, manager, tmp_path, 150)
    made = ensure_lookalike(store, manager, "seed", SEED, US)
    store.delete(layout.lookalike("seed", "US-1"))
    found = ensure_lookalike(store, manager, "seed", SEED, US)
    assert (found.event, found.lookalike_id) == (FOUND, made.lookalike_id)
    sandbox.state.delete_audience(made.lookalike_id)
    again = ensure_lookalike(store, manager, "seed", SEED, US)
    assert again.event == RECREATED and again.lookalike_id != made.lookalike_id
    assert "no longer exists on Meta" in again.note
    assert not judged(again)["lookalike"].healthy  # a warning, with the note
    assert [lk["id"] for lk in sandbox.lookalikes(seed_id)] == [again.lookalike_id]


def test_metas_duplicate_refusal_means_already_there(sandbox, manager, tmp_path):
    """2654/1713007 ("Can't Create a Duplicate Lookalike") is taken as "already there": the one Meta holds is used."""
    store = LocalStore(tmp_path / "store")
    seed_id = seeded(store, sandbox, manager, tmp_path, 150)
    body = {"name": "by hand", "subtype": "LOOKALIKE", "origin_audience_id": seed_id}
    by_hand = manager.client.post(f"{ACCOUNT}/customaudiences", {**body, "lookalike_spec": json.dumps(spec_params(US))})
    with pytest.raises(MetaApiError) as refused:  # what Meta answers a second create
        manager.client.post(f"{ACCOUNT}/customaudiences", {**body, "lookalike_spec": json.dumps(spec_params(US))})
    assert (refused.value.code, refused.value.subcode) == (2654, 1713007)
    assert create(manager, seed_id, SEED, US) == str(by_hand["id"])
    assert len(sandbox.lookalikes(seed_id)) == 1


def test_a_lookalike_waits_while_its_seed_is_not_ready(sandbox, manager, tmp_path):
    store = LocalStore(tmp_path / "store")
    unsynced = ensure_lookalike(store, manager, "seed", SEED, US)
    assert unsynced.event == WAITING and "has not been synced" in unsynced.note
    seed_id = seeded(store, sandbox, manager, tmp_path, 99)
    small = ensure_lookalike(store, manager, "seed", SEED, US)
    assert small.event == WAITING and "holds 99 rows" in small.note
    seed_id = seeded(store, sandbox, manager, tmp_path, 150)
    sandbox.set_health(seed_id, populating_reads=1)
    populating = ensure_lookalike(store, manager, "seed", SEED, US)
    assert populating.event == WAITING and "still populating the seed" in populating.note
    assert all(not j.healthy for j in judged(populating).values())
    sandbox.state.delete_audience(seed_id)
    gone = ensure_lookalike(store, manager, "seed", SEED, US)
    assert gone.event == WAITING and "no longer exists" in gone.note
    assert sandbox.lookalikes(seed_id) == []
    assert store.get_bytes(layout.lookalike("seed", "US-1")) is None


def test_metas_refusal_of_a_small_seed_is_a_wait_in_metas_words(sandbox, manager, tmp_path):
    """Our record says 150 rows were confirmed; Meta holds (matched) 60 people and refuses: Meta is right."""
    store = LocalStore(tmp_path / "store")
    seed_id = seeded(store, sandbox, manager, tmp_path, 150)
    sandbox.state.change_members(seed_id, [f"k{i}" for i in range(60, 150)], remove=True)
    refused = ensure_lookalike(store, manager, "seed", SEED, US)
    assert refused.event == REFUSED and refused.waiting and refused.lookalike_id == ""
    assert "Meta refused to make it" in refused.note and "(#2654)" in refused.note
    assert all(not j.healthy for j in judged(refused).values())
    assert sandbox.lookalikes(seed_id) == [] and store.get_bytes(layout.lookalike("seed", "US-1")) is None


def test_a_populating_lookalike_warns_with_metas_timescale(sandbox, manager, tmp_path):
    store = LocalStore(tmp_path / "store")
    seeded(store, sandbox, manager, tmp_path, 150)
    made = ensure_lookalike(store, manager, "seed", SEED, US)
    sandbox.set_health(made.lookalike_id, populating_reads=1)
    populating = judged(ensure_lookalike(store, manager, "seed", SEED, US))["operation_status"]
    assert populating.severity == "warn" and "one to six hours" in populating.message()


def test_a_record_meta_contradicts_stops_and_a_new_seed_gets_its_own_lookalike(sandbox, manager, tmp_path):
    """The id on record names something else on Meta: nothing is made on a guess. A seed made anew (the old one was
    deleted) gets a lookalike of its own, and the warning names the old seed's lookalike, still on Meta."""
    store = LocalStore(tmp_path / "store")
    seed_id = seeded(store, sandbox, manager, tmp_path, 150)
    made = ensure_lookalike(store, manager, "seed", SEED, US)
    record = json.loads(store.get_bytes(layout.lookalike("seed", "US-1")))
    store.put_bytes(layout.lookalike("seed", "US-1"), json.dumps({**record, "lookalike_id": seed_id}).encode())
    with pytest.raises(LookalikeMismatch, match=f"Meta audience {seed_id}, on record as lookalike US-1"):
        ensure_lookalike(store, manager, "seed", SEED, US)
    assert len(sandbox.lookalikes(seed_id)) == 1
    store.put_bytes(layout.lookalike("seed", "US-1"), json.dumps(record).encode())

    sandbox.state.delete_audience(seed_id)
    new_seed = seeded(store, sandbox, manager, tmp_path, 150)  # the seed's next sync made it anew
    again = ensure_lookalike(store, manager, "seed", SEED, US)
    assert again.event == NEW_SEED and again.lookalike_id != made.lookalike_id
    assert f"lookalike {made.lookalike_id} of the old seed stays on Meta" in again.note
    assert [lk["id"] for lk in sandbox.lookalikes(new_seed)] == [again.lookalike_id]
    assert not judged(again)["lookalike"].healthy
