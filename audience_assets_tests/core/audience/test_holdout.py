"""Holdout groups: the arm is the documented rule (checked against an independent Python computation), a
continuing customer keeps their arm whatever else the data does, and a changed split waits for its approval."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_assets.core import layout
from audience_assets.core.audience.holdout import CONTROL, TREATMENT, hold_unapproved_change, record_spec, write_arms
from audience_assets.core.config import Audience, ConfigError, load_config
from audience_assets.core.findings import Held
from audience_assets.core.store import LocalStore
from audience_assets_tests.conftest import copy_config
from audience_assets_tests.oracle import in_control

IDS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)


def audience(share: float | None = 0.1, salt: str = "spring-2027") -> Audience:
    holdout = {"share": share, "salt": salt} if share is not None else None
    return Audience(meta_name="A", select={"acme_data": {"Interest": ["travel"]}}, holdout=holdout)


def split(tmp_path: Path, spec: Audience, ids: list[str], emails: dict[str, str] | None = None):
    """write_arms over `ids` (customers with an EMAIL where `emails` gives one): (arm by id, Arms)."""
    con = duckdb.connect()
    try:
        table = pa.table(
            {
                "customer_id": pa.array(ids, pa.string()),
                "EMAIL": pa.array([(emails or {}).get(i, "") for i in ids], pa.string()),
                "PHONE": pa.array([""] * len(ids), pa.string()),
            }
        )
        con.register("given", table)
        con.execute("CREATE TABLE eligible AS SELECT customer_id FROM given")
        customers = tmp_path / "customers.parquet"
        con.execute(f"COPY given TO '{customers}' (FORMAT parquet)")
        out = tmp_path / "arms.parquet"
        arms = write_arms(con, spec, "eligible", customers, out)
        by_id = dict(con.execute(f"SELECT customer_id, arm FROM read_parquet('{out}')").fetchall())
    finally:
        con.close()
    return by_id, arms


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(IDS, min_size=1, max_size=200, unique=True), share=st.floats(0.01, 0.5), salt=IDS)
def test_the_sql_arm_is_the_documented_rule(tmp_path: Path, ids: list[str], share: float, salt: str):
    by_id, arms = split(tmp_path, audience(share, salt), ids)
    assert by_id == {i: CONTROL if in_control(salt, share, i) else TREATMENT for i in ids}
    assert arms.control == sum(in_control(salt, share, i) for i in ids) and arms.treatment + arms.control == len(ids)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(IDS, min_size=1, max_size=150, unique=True),
    arrivals=st.lists(IDS, max_size=150, unique=True),
    leaving=st.integers(0, 150),
)
def test_a_continuing_customer_keeps_their_arm_whatever_else_changes(tmp_path, before, arrivals, leaving):
    spec = audience(0.3, "stable")
    after = [i for i in before[leaving:]] + [i for i in arrivals if i not in before]
    first, _ = split(tmp_path, spec, before)
    second, _ = split(tmp_path, spec, after)
    assert {i: second[i] for i in set(before) & set(after)} == {i: first[i] for i in set(before) & set(after)}


def test_the_arms_are_measured_and_balanced_on_identifiers(tmp_path: Path):
    ids = [f"C{i:06d}" for i in range(20_000)]
    by_id, arms = split(tmp_path, audience(0.2, "measure"), ids, emails={i: "h" for i in ids[::2]})
    assert arms.control == sum(arm == CONTROL for arm in by_id.values())
    assert abs(arms.z) < 4  # binomial: 20,000 draws at 20 %
    figures = arms.metadata()
    assert figures["holdout/treatment"] + figures["holdout/control"] == 20_000
    assert abs(figures["holdout/email_present/treatment"] - 0.5) < 0.02
    assert abs(figures["holdout/email_present/smd"]) < 0.1  # a salted hash knows nothing about emails
    assert figures["holdout/phone_present/control"] == 0.0


def test_without_a_holdout_everyone_is_treatment(tmp_path: Path):
    by_id, arms = split(tmp_path, audience(None), ["C1", "C2", "C3"])
    assert set(by_id.values()) == {TREATMENT}
    assert arms.metadata() == {"holdout/share": 0.0, "holdout/treatment": 3, "holdout/control": 0}


def test_another_salt_draws_other_arms_and_the_same_salt_the_same_across_audiences(tmp_path: Path):
    ids = [f"C{i:05d}" for i in range(2_000)]
    spring, _ = split(tmp_path, audience(0.1, "spring"), ids)
    other = Audience(meta_name="B", select={"beta": {"s": ["x"]}}, holdout={"share": 0.1, "salt": "spring"})
    again, _ = split(tmp_path, other, ids)
    autumn, _ = split(tmp_path, audience(0.1, "autumn"), ids)
    assert spring == again
    control = {i for i, arm in spring.items() if arm == CONTROL}
    moved = control ^ {i for i, arm in autumn.items() if arm == CONTROL}
    assert len(moved) > len(control)  # independent draws overlap by about share², not by share


@pytest.mark.parametrize("mode", ["add", "remove"])
def test_a_holdout_needs_an_audience_meta_mirrors(tmp_path: Path, mode: str):
    config_dir = copy_config(
        tmp_path / "config", {"young_gamers": {"mode": mode, "holdout": {"share": 0.1, "salt": "s"}}}
    )
    with pytest.raises(ConfigError, match=f"holdout needs mode mirror or replace .this audience's mode is {mode}"):
        load_config(config_dir)


@pytest.mark.parametrize(
    ("holdout", "message"),
    [
        ({"share": 0, "salt": "s"}, "greater than 0"),
        ({"share": 0.6, "salt": "s"}, "less than or equal to 0.5"),
        ({"share": 0.1, "salt": ""}, "at least 1 character"),
        ({"share": 0.1}, "salt"),
    ],
)
def test_a_holdout_out_of_bounds_is_a_config_error(tmp_path: Path, holdout: dict, message: str):
    config_dir = copy_config(tmp_path / "config", {"young_gamers": {"holdout": holdout}})
    with pytest.raises(ConfigError, match=message):
        load_config(config_dir)


def test_a_changed_split_waits_for_its_own_approval(tmp_path: Path):
    store = LocalStore(str(tmp_path))
    name = "travel"
    assert hold_unapproved_change(store, name, audience(0.1), {}) is None  # a first selection: nothing moves
    record_spec(store, name, audience(0.1))
    assert hold_unapproved_change(store, name, audience(0.1), {}) is None

    with pytest.raises(Held) as held:
        hold_unapproved_change(store, name, audience(0.2), {})
    assert "changed from share 10%, salt 'spring-2027' to share 20%, salt 'spring-2027'" in str(held.value)
    assert f"--approve-holdout {name}" in str(held.value)
    with pytest.raises(Held, match="to no holdout"):
        hold_unapproved_change(store, name, audience(None), {})
    with pytest.raises(Held):
        hold_unapproved_change(store, name, audience(0.2), {"audience_assets/approve_holdout": "other"})
    approved = hold_unapproved_change(store, name, audience(0.2), {"audience_assets/approve_holdout": name})
    assert approved and "approved for this run" in approved

    # members published before holdouts existed were published without one: adding one is a change
    store.put_bytes(layout.audience_members("older"), b"parquet")
    with pytest.raises(Held, match="from no holdout to share 10%"):
        hold_unapproved_change(store, "older", audience(0.1), {})
    assert hold_unapproved_change(store, "older", audience(None), {}) is None
    record_spec(store, "older", audience(None))
    assert json.loads(store.get_bytes(layout.holdout_record("older"))) == {"holdout": None}
