"""Opt-outs and the privacy floor, end to end through the headless pipeline and the Meta sandbox.

Suppressed people never reach Meta in add, mirror or replace mode; someone who opts out after an upload is
removed from every audience on the next sync; an audience below its floor uploads nothing.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from audience_assets.core import layout
from audience_assets.core.audience.floor import below_floor, members_after
from audience_assets.core.audience.plan import Chunk, Operation, Plan
from audience_assets.core.config import load_config
from audience_assets.core.settings import Settings
from audience_assets.headless import run_pipeline
from audience_assets.standins.graph_sandbox import GraphSandbox
from audience_assets_tests import oracle
from audience_assets_tests.world import copy_landing, world_config

pytestmark = pytest.mark.slow


def run(data: Path, config_dir: Path, out: io.StringIO | None = None) -> bool:
    with dg.DagsterInstance.ephemeral() as instance:
        return run_pipeline(
            Settings(data_dir=data, config_dir=config_dir, demo_data=False), instance, out=out or io.StringIO()
        )


def sandbox_members(data: Path, config) -> dict[str, set[str]]:
    sandbox = GraphSandbox(data / "meta_sandbox" / "graph.sqlite")
    try:
        return {a: sandbox.member_keys(sandbox.audience_id(spec.meta_name)) for a, spec in config.audiences.items()}
    finally:
        sandbox.close()


def test_opt_outs_never_reach_meta_and_later_opt_outs_are_removed(world: dict):
    data, config_dir, config = world["data"], world["config_dir"], world["config"]
    assert {spec.mode for spec in config.audiences.values()} == {"add", "mirror", "replace"}

    expected = oracle.compute(data / "landing", config)
    suppressed = expected.suppressed()
    held = sandbox_members(data, config)
    for audience in config.audiences:
        assert held[audience] and not held[audience] & expected.row_keys(config, audience, suppressed)
        assert held[audience] == expected.row_keys(config, audience)
    assert any(qualified & suppressed for qualified in [set(expected.matches(p)) for p in config.partners])

    # Later, 25 current members of every audience opt out (a new file in the landing zone).
    crm = {
        row["customer_id"]: row
        for row in csv.DictReader((data / "landing" / "first_party").glob("*.csv").__next__().open())
    }
    leaving = set()
    for audience in config.audiences:
        members = [r["customer_id"] for r in pq.read_table(data / layout.audience_members(audience)).to_pylist()]
        leaving |= set([c for c in members if expected.customers[c]["EMAIL"]][:25])
    later = data / "landing" / "suppression" / "optouts_2026-11-20.csv"
    later.write_text("email\n" + "".join(f"{crm[c]['email']}\n" for c in sorted(leaving)))
    assert run(data, config_dir)

    after = sandbox_members(data, config)
    expected = oracle.compute(data / "landing", config)
    for audience in config.audiences:
        gone = expected.row_keys(config, audience, leaving)
        assert not after[audience] & gone, audience
        assert held[audience] & gone, f"{audience} held some of the people who opted out later"
        assert after[audience] == expected.row_keys(config, audience)
    latest = {a: json.loads(sorted((data / "audit" / a).glob("*.json"))[-1].read_text()) for a in config.audiences}
    kinds = {record["mode"]: {op["kind"] for op in record["operations"]} for record in latest.values()}
    assert "remove" in kinds["add"] and "remove" in kinds["mirror"] and kinds["replace"] == {"replace"}
    assert all(len(sorted((data / "audit" / a).glob("*.json"))) == 2 for a in config.audiences)  # one per upload


def test_an_audience_below_its_floor_uploads_nothing(landing: Path, tmp_path: Path):
    data = copy_landing(landing, tmp_path / "data")
    config_dir = world_config(tmp_path / "config", {"young_gamers": {"min_size": 5_000}})
    report = io.StringIO()
    assert not run(data, config_dir, report)  # the run reports the blocked audience, and why
    blocked = [line for line in report.getvalue().splitlines() if "young_gamers" in line or "privacy_floor" in line]
    assert blocked[0].startswith("FAILED") and any("privacy_floor" in line for line in blocked), report.getvalue()
    config = load_config(config_dir)
    sandbox = GraphSandbox(data / "meta_sandbox" / "graph.sqlite")
    try:
        assert sandbox.audience_id(config.audiences["young_gamers"].meta_name) is None
        assert sandbox.audience_id(config.audiences["travel_enthusiasts"].meta_name) is not None
    finally:
        sandbox.close()
    assert not (data / layout.upload_plan("young_gamers")).exists()


def test_a_removal_that_would_shrink_an_audience_below_its_floor_is_refused():
    chunk = Chunk(0, 50, "chunk-key", "digest")
    shrink = Plan("u1", ("EMAIL",), (Operation("remove", (chunk,)),), "remove", desired_rows=50, confirmed_rows=120)
    assert members_after(shrink) == 70
    assert below_floor("young_gamers", 100, after=members_after(shrink)) == (
        "the upload for 'young_gamers' would leave 70 members on Meta, below its privacy floor of 100: refused; "
        "nothing was sent"
    )
    assert (
        below_floor(
            "young_gamers",
            100,
            after=members_after(Plan("u2", ("EMAIL",), (Operation("remove", (chunk,)),), "remove", 50, 150)),
        )
        is None
    )
    assert members_after(Plan("u3", ("EMAIL",), (), "remove", 0, 10)) is None  # nothing to send: nothing to refuse
    replace = Plan("u4", ("EMAIL",), (Operation("replace", (chunk,)),), "replace", 50, 5000)
    assert members_after(replace) == 50 and below_floor("young_gamers", 100, after=50)
