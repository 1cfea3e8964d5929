"""Holdout groups end to end on the session world (the demo's travel_enthusiasts keeps 10 % out): the control arm
never reaches Meta (checked over the sandbox's stored hashes against an independent computation of the arms), both
arms are recorded as `audience_holdout`, the plan shows them, and a changed salt waits for its approval."""

from __future__ import annotations

import io

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from audience_assets.core import layout
from audience_assets.core.config import load_config
from audience_assets.core.settings import Settings
from audience_assets.headless import plan_pipeline
from audience_assets_tests import oracle
from audience_assets_tests.world import latest_metadata, meta, run, sandbox

pytestmark = pytest.mark.slow
AUDIENCE = "travel_enthusiasts"


def test_the_control_arm_never_reaches_meta_and_both_arms_are_recorded(world: dict, baseline):
    config, data = world["config"], world["data"]
    holdout = config.audiences[AUDIENCE].holdout
    assert holdout is not None, "the demo configuration ships an audience with a holdout"
    expected = oracle.compute(data / "landing", config)
    control, eligible = expected.control(config, AUDIENCE), expected.eligible(config, AUDIENCE)
    held = world["held"][AUDIENCE]
    assert held == expected.row_keys(config, AUDIENCE)  # exactly the treatment arm
    assert not held & expected.row_keys(config, AUDIENCE, control), "a control member's hashes reached Meta"

    arms = {r["customer_id"]: r["arm"] for r in pq.read_table(data / layout.holdout_arms(AUDIENCE)).to_pylist()}
    assert set(arms) == eligible and {c for c, arm in arms.items() if arm == "control"} == control
    n, p = len(eligible), holdout.share
    assert abs(len(control) - n * p) < 4 * (n * p * (1 - p)) ** 0.5, "the share is within binomial tolerance"

    with dg.DagsterInstance.from_config(str(baseline / "dagster_home")) as instance:
        recorded = latest_metadata(instance, "audience_holdout", AUDIENCE)
        members = latest_metadata(instance, "audience_members", AUDIENCE)
        plain = latest_metadata(instance, "audience_holdout", "new_parents")
    assert plain["holdout/control"] == 0 and plain["holdout/treatment"] == len(expected.members(config, "new_parents"))
    assert recorded["holdout/control"] == len(control) and recorded["dagster/row_count"] == n
    assert members["members"] == n - len(control) and members["holdout/treatment"] == members["members"]
    assert abs(recorded["holdout/email_present/smd"]) < 0.2  # the arms look alike on who has an email


def test_the_plan_shows_the_arms_the_values_and_the_lookalikes(world: dict):
    """One plan of the holdout's audience and the value-based one with its lookalike."""
    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        settings = Settings(data_dir=world["data"], config_dir=world["config_dir"], demo_data=False)
        assert plan_pipeline(settings, instance, [AUDIENCE, "new_parents"], out)
    config = world["config"]
    expected = oracle.compute(world["data"] / "landing", config)
    sent = expected.sent_values(config, "new_parents")
    without = len(expected.members(config, "new_parents")) - len(sent)
    values = next(x for x in out.getvalue().splitlines() if x.strip().startswith("values from ltv_usd"))
    assert f"on {len(sent):,} rows" in values and f"max {max(sent.values()):,.2f}" in values, values
    assert f"{without:,} members without a value are left out" in values
    held = sandbox(world["data"].parent)
    try:
        (made,) = held.lookalikes(held.audience_id(config.audiences["new_parents"].meta_name))
    finally:
        held.close()
    lookalike = next(x for x in out.getvalue().splitlines() if x.strip().startswith("lookalike US-1"))
    assert f"lookalike US-1 (top 1% of US): Meta lookalike {made['id']}, made from seed" in lookalike, lookalike
    treatment, control = len(expected.members(config, AUDIENCE)), len(expected.control(config, AUDIENCE))
    line = next(x for x in out.getvalue().splitlines() if x.strip().startswith("holdout"))
    assert line.strip().startswith(f"holdout share 10%, salt 'demo-2026': treatment {treatment:,} (in the plan)")
    assert f"control {control:,} (kept in audience_holdout" in line, out.getvalue()


def test_a_changed_salt_waits_for_approval_then_moves_people_between_arms(world: dict):
    data, config_dir = world["data"], world["config_dir"]
    before_arms = (data / layout.holdout_arms(AUDIENCE)).read_bytes()
    path = config_dir / "audiences.yaml"
    declared = yaml.safe_load(path.read_text())
    declared["audiences"][AUDIENCE]["holdout"]["salt"] = "autumn-2027"
    path.write_text(yaml.safe_dump(declared, allow_unicode=True))

    out = io.StringIO()
    assert not run(data, config_dir, out)
    assert "--approve-holdout travel_enthusiasts" in out.getvalue(), out.getvalue()
    planned = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        settings = Settings(data_dir=data, config_dir=config_dir, demo_data=False)
        plan_pipeline(settings, instance, [AUDIENCE], planned)
    assert (
        "holdout: the configuration changes it from share 10%, salt 'demo-2026' to share 10%, salt 'autumn-2027'"
        in planned.getvalue()
    ), planned.getvalue()
    assert meta(data.parent) == world["held"], "nothing moved"
    assert (data / layout.holdout_arms(AUDIENCE)).read_bytes() == before_arms

    tags = {"audience_assets/approve_holdout": AUDIENCE, "audience_assets/approve_removals": AUDIENCE}
    assert run(data, config_dir, io.StringIO(), tags=tags)
    config = load_config(config_dir)
    expected = oracle.compute(data / "landing", config)
    after = meta(data.parent)
    assert after[AUDIENCE] == expected.row_keys(config, AUDIENCE)
    assert after[AUDIENCE] - world["held"][AUDIENCE] and world["held"][AUDIENCE] - after[AUDIENCE]
    assert not after[AUDIENCE] & expected.row_keys(config, AUDIENCE, expected.control(config, AUDIENCE))
    assert run(data, config_dir, io.StringIO()), "the new split is the recorded one: no further approval"
