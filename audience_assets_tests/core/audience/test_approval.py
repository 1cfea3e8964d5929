"""What waits for a person: removals beyond max_removal (opt-outs aside) and `approval: manual` audiences in
runs nobody launched by hand."""

from __future__ import annotations

from pathlib import Path

import duckdb

from audience_assets.core.audience.approval import awaiting_approval, review_removals, unattended
from audience_assets.core.audience.plan import plan_upload, row_id_sql
from audience_assets.core.duck import sql_path

KEYS = ["EMAIL", "EXTERN_ID"]


def rows(con: duckdb.DuckDBPyConnection, path: Path, ids: range) -> Path:
    con.execute(
        f"COPY (SELECT {row_id_sql(KEYS)} AS row_id, * FROM (SELECT sha256('e' || range) AS EMAIL, "
        f"'c' || range AS EXTERN_ID FROM range({ids.start}, {ids.stop}))) TO {sql_path(path)} (FORMAT parquet)"
    )
    return path


def plan_for(tmp_path: Path, mode: str, desired: range, confirmed: range, opted_out: range):
    with duckdb.connect() as con:
        suppression = tmp_path / "suppressed.parquet"
        con.execute(
            f"COPY (SELECT sha256('e' || range) AS hashed_email, NULL::VARCHAR AS hashed_phone, "
            f"NULL::VARCHAR AS hashed_madid FROM range({opted_out.start}, {opted_out.stop})) "
            f"TO {sql_path(suppression)} (FORMAT parquet)"
        )
        return plan_upload(
            con,
            audience="a",
            mode=mode,
            keys=KEYS,
            desired=rows(con, tmp_path / "desired.parquet", desired),
            confirmed=rows(con, tmp_path / "confirmed.parquet", confirmed),
            suppression=suppression,
            out_dir=tmp_path / mode,
        )


def test_removals_under_review_leave_opt_outs_aside(tmp_path: Path):
    # Meta holds 0..999; 850..899 opted out (so selection left them out); 900..999 left for no known reason
    plan = plan_for(tmp_path, "mirror", range(0, 850), range(0, 1000), range(850, 900))
    assert plan.rows("remove") == 150 and plan.removals_to_review == 100
    assert plan_for(tmp_path, "add", range(0, 10), range(0, 1000), range(0, 0)).removals_to_review == 0
    assert plan_for(tmp_path, "replace", range(0, 500), range(0, 1000), range(0, 0)).removals_to_review == 500


def test_a_large_removal_is_held_unless_this_run_names_the_audience(tmp_path: Path):
    plan = plan_for(tmp_path, "replace", range(0, 850), range(0, 1000), range(0, 0))
    assert not review_removals("a", plan, 0.2, {}).blocked  # 15 % under a 20 % limit
    held = review_removals("a", plan, 0.1, {})
    assert held.blocked and "remove 150 of the 1,000 rows Meta holds (15.0%; max_removal is 10%)" in held.message()
    assert f"--approve-removals a@{plan.upload_id[:12]}" in held.message()
    pinned = {"audience_assets/approve_removals": f"a@{plan.upload_id[:12]}"}
    assert not review_removals("a", plan, 0.1, pinned).blocked
    other = {"audience_assets/approve_removals": "a@0123456789ab"}  # approved a different plan
    assert review_removals("a", plan, 0.1, other).blocked
    assert review_removals("a", plan, 0.1, {"audience_assets/approve_removals": "b"}).blocked
    approved = review_removals("a", plan, 0.1, {"audience_assets/approve_removals": "b, a"})
    assert not approved.blocked and approved.metadata()["removal/approved"] is True


def test_manual_audiences_wait_in_unattended_runs_only():
    automation = {"dagster/from_automation_condition": "true"}
    assert unattended(automation) and unattended({"dagster/sensor_name": "replay_sensor"})
    assert unattended({"audience_assets/trigger": "headless"}) and not unattended({})
    assert awaiting_approval("a", True, automation)
    assert not awaiting_approval("a", True, {})  # someone materialized it by hand
    assert not awaiting_approval("a", True, {**automation, "audience_assets/approve_upload": "a"})
    assert not awaiting_approval("a", False, automation)


def test_a_plan_stored_before_removals_were_reviewed_is_reviewed_conservatively():
    """Plan documents from an earlier version carry no `removals_to_review`: every row they remove counts."""
    from audience_assets.core.audience.plan import Plan

    mirror = {
        "upload_id": "u",
        "schema": ["EMAIL"],
        "mode": "mirror",
        "confirmed_rows": 1000,
        "operations": [{"kind": "remove", "rows": 600, "chunks": []}],
    }
    replace = {**mirror, "mode": "replace", "operations": [{"kind": "replace", "rows": 300, "chunks": []}]}
    assert Plan.from_document(mirror).removals_to_review == 600
    assert Plan.from_document(replace).removals_to_review == 700
    assert review_removals("a", Plan.from_document(mirror), 0.1, {}).blocked
