"""The walking pipeline end to end: the README's headless command on generated demo data.

The session's world (`baseline`, world.py) is that command's run: `python -m audience_assets run` in a
subprocess against a landing zone of generated demo data, a Dagster home and the built-in Meta sandbox. Its outputs
are checked here against `oracle`, an independent computation (Python csv/pyarrow readers and the pure-Python
normalization reference instead of DuckDB SQL).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from audience_assets.core import layout
from audience_assets.core.config import load_config
from audience_assets.core.identity import HASHED_KEYS
from audience_assets.standins.graph_sandbox import GraphSandbox
from audience_assets_tests import oracle
from audience_assets_tests.world import CHUNK_ROWS

pytestmark = pytest.mark.slow
HEX64_OR_EMPTY = re.compile(r"^([0-9a-f]{64})?$")


# ##### FIXTURES


@pytest.fixture(scope="module")
def run(baseline: Path):
    """What the world's run left: its console, its Dagster home's materializations, its outputs (read only)."""
    data = baseline / "data"
    config = load_config(baseline / "config")
    with dg.DagsterInstance.from_config(str(baseline / "dagster_home")) as instance:
        metadata = {}
        for key in instance.get_asset_keys():
            for record in instance.fetch_materializations(key, limit=100).records:
                m = record.asset_materialization
                metadata[(m.asset_key.to_user_string(), m.partition)] = {k: v.value for k, v in m.metadata.items()}
    return {
        "stdout": (baseline / "stdout.txt").read_text(),
        "stderr": (baseline / "stderr.txt").read_text(),
        "data": data,
        "config": config,
        "metadata": metadata,
        "expected": oracle.compute(data / "landing", config),
    }


def parquet_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# ##### TESTS


def test_headless_command_reports_every_step(run):
    steps = [line for line in run["stdout"].splitlines() if line.startswith(("ok", "FAILED"))]
    config = run["config"]
    lookalikes = sum(len(spec.lookalikes) for spec in config.audiences.values())
    assert len(steps) == 1 + len(config.partners) + len(config.audiences) + lookalikes + 1  # + the cost report
    assert all(line.startswith("ok") for line in steps)
    # a quiet terminal: the steps' own lines, none of Dagster's DEBUG event stream (the instance keeps it)
    logged = run["stderr"].splitlines()
    assert not [line for line in logged if " - DEBUG - " in line] and len(logged) < 40, run["stderr"][-3000:]
    assert any("rows read from 1 file(s)" in line for line in logged)


def test_match_counts_equal_the_independent_computation(run):
    expected, data = run["expected"], run["data"]
    for partner in run["config"].partners:
        matched = set(run["expected"].matches(partner))
        rows = parquet_rows(data / layout.matches(partner))
        assert set(rows[0]) == {"customer_id", "segment_name", "segment_value"}, "no partner identifier leaves the room"
        stored = {r["customer_id"] for r in rows}
        assert stored == matched
        meta = run["metadata"][("clean_room_matches", partner)]
        assert meta["matched_customers"] == len(matched) > 1_000
        assert meta["match_rate"] == pytest.approx(len(matched) / len(expected.customers), abs=1e-6)
    assert run["metadata"][("first_party_customers", None)]["dagster/row_count"] == len(expected.customers)


def test_members_are_the_selected_customers_minus_opt_outs(run):
    expected, data = run["expected"], run["data"]
    suppressed = expected.suppressed()
    for audience in run["config"].audiences:
        members = expected.members(run["config"], audience)
        stored = [r["customer_id"] for r in parquet_rows(data / layout.audience_members(audience))]
        assert len(stored) == len(set(stored)), "members must be deduplicated"
        assert set(stored) == members
        assert not members & suppressed
        meta = run["metadata"][("audience_members", audience)]
        assert meta["members"] == len(members) >= run["config"].audiences[audience].min_size
    assert any(run["metadata"][("audience_members", a)]["suppressed"] > 0 for a in run["config"].audiences)


def test_chunks_hold_at_most_the_limit_and_only_hashes_where_meta_wants_hashes(run):
    data = run["data"]
    for audience, spec in run["config"].audiences.items():
        plan = json.loads((data / layout.upload_plan(audience)).read_text())
        limit = CHUNK_ROWS.get(audience, 10_000)
        sizes = [c["rows"] for op in plan["operations"] for c in op["chunks"]]
        assert sizes and max(sizes) <= limit <= 10_000
        assert sum(sizes) == len(run["expected"].row_keys(run["config"], audience))  # value-based: with a value
        for op in plan["operations"]:
            for chunk in op["chunks"]:
                rows = parquet_rows(data / chunk["key"])
                assert len(rows) == chunk["rows"]
                for row in rows:
                    for key in spec.keys:
                        if key in HASHED_KEYS:
                            assert HEX64_OR_EMPTY.match(row[key]), (audience, key)
                    assert not HEX64_OR_EMPTY.fullmatch(row["EXTERN_ID"] or "x"), "EXTERN_ID is sent unhashed"
    travel = json.loads((data / layout.upload_plan("travel_enthusiasts")).read_text())
    assert len(travel["operations"][0]["chunks"]) > 2


def test_sandbox_audiences_hold_exactly_the_members(run):
    sandbox = GraphSandbox(run["data"] / "meta_sandbox" / "graph.sqlite")
    try:
        for audience, spec in run["config"].audiences.items():
            audience_id = sandbox.audience_id(spec.meta_name)
            assert audience_id is not None
            assert sandbox.member_keys(audience_id) == run["expected"].row_keys(run["config"], audience)
            meta = run["metadata"][("meta_custom_audience", audience)]
            assert meta["audience_id"] == audience_id
            assert meta["sandbox_member_count"] == len(run["expected"].row_keys(run["config"], audience))
            assert meta["num_received"] == meta["rows_sent"] and meta["num_invalid_entries"] == 0
            if spec.value:  # each row's value, as Meta stored it, is the largest of its person's CRM values
                assert sandbox.member_values(audience_id) == run["expected"].sent_values(run["config"], audience)
        assert sandbox.resent_replace_batches() == 0
    finally:
        sandbox.close()


def test_value_based_audiences_leave_members_without_a_value_out_and_report_the_values(run):
    config, expected = run["config"], run["expected"]
    (audience,) = [a for a, spec in config.audiences.items() if spec.value]  # the demo ships one
    sent = expected.sent_values(config, audience)
    chunks = run["metadata"][("audience_chunks", audience)]
    assert chunks["value_rows"] == len(sent) < len(expected.members(config, audience))
    assert chunks["members_without_value"] == len(expected.members(config, audience)) - len(sent)
    assert chunks["value_max"] == pytest.approx(max(sent.values()), abs=1e-4)
    assert chunks["value_total"] == pytest.approx(sum(sent.values()), abs=0.01)
    assert "value ltv_usd" in run["metadata"][("first_party_customers", None)]["invalid_values"]


def test_each_declared_lookalike_is_made_from_its_seed_once(run):
    sandbox = GraphSandbox(run["data"] / "meta_sandbox" / "graph.sqlite")
    try:
        for audience, spec in run["config"].audiences.items():
            seed_id = sandbox.audience_id(spec.meta_name)
            made = sandbox.lookalikes(seed_id)
            assert sorted((m["country"], m["starting_ratio"], m["ratio"]) for m in made) == sorted(
                (lk.country, lk.starting_ratio, lk.ratio) for lk in spec.lookalikes
            )
            for lookalike in spec.lookalikes:
                meta = run["metadata"][("meta_lookalike_audience", f"{audience}.{lookalike.key}")]
                assert (meta["event"], meta["seed_audience_id"]) == ("created", seed_id)
                assert meta["lookalike_id"] in {m["id"] for m in made}
    finally:
        sandbox.close()


def test_no_plaintext_identifier_reaches_metadata_or_logs(run):
    crm = next((run["data"] / "landing" / "first_party").glob("*.csv")).read_text(encoding="utf-8").splitlines()[1:200]
    emails = {line.split(",")[1].strip().lower() for line in crm if "@" in line}
    text = (repr(run["metadata"]) + run["stdout"] + run["stderr"]).lower()
    assert emails and not [e for e in emails if e and e in text]
