"""Asset checks: each fails on crafted bad data and passes on good data; a blocking check stops the upload."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from audience_assets.core import layout
from audience_assets.core.audience.outbound import outbound_cell_problems
from audience_assets.core.config import load_config
from audience_assets.core.demo import generate
from audience_assets.core.ingestion.read import FileReport, IngestReport
from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions
from audience_assets.defs.activation import checks
from audience_assets.defs.clean_room.checks import MATCH_RATE, match_rate
from audience_assets.defs.ingest.checks import row_accounting
from audience_assets.defs.resources import build_resources
from audience_assets.headless import run_pipeline
from audience_assets.standins.graph_sandbox import GraphSandbox
from audience_assets_tests.conftest import copy_config


def test_row_accounting():
    good = IngestReport(files=[FileReport("a.csv", rows_read=10, rows_accepted=8, rows_quarantined=2)])
    bad = IngestReport(files=[FileReport("a.csv", rows_read=10, rows_accepted=8, rows_quarantined=1)])
    assert row_accounting(good).passed
    result = row_accounting(bad)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR and "a.csv" in result.description


def test_outbound_cells(tmp_path: Path):
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    duckdb.execute(
        f"COPY (SELECT sha256('a@example.com') AS EMAIL, '' AS PHONE, 'C1' AS EXTERN_ID, "
        f"'ab7a7c55-1c8f-4f3b-9d2b-0e7b2b1c9a11' AS MADID) TO '{good}' (FORMAT parquet)"
    )
    duckdb.execute(
        f"COPY (SELECT 'a@example.com' AS EMAIL, upper(sha256('x')) AS PHONE, 'b@example.com' AS EXTERN_ID, "
        f"'AB7A7C55-1C8F-4F3B-9D2B-0E7B2B1C9A11' AS MADID UNION ALL SELECT sha256('y'), '', "
        f"'+1 (555) 010-0001', '' ) TO '{bad}' (FORMAT parquet)"
    )
    con = duckdb.connect()
    keys = ["EMAIL", "PHONE", "EXTERN_ID", "MADID"]
    assert outbound_cell_problems(con, [good], keys) == {}
    assert outbound_cell_problems(con, [bad], keys) == {"EMAIL": 1, "PHONE": 1, "EXTERN_ID": 2, "MADID": 1}
    assert checks.hashed_cells({}, 4).passed and not checks.hashed_cells({"EMAIL": 1}, 4).passed


def test_outbound_cells_of_repeating_keys_count_every_row(tmp_path: Path):
    """Names, places and dates are tested once per distinct value: a bad value counts as often as it occurs,
    in each file, and a NULL is an empty cell (allowed)."""
    files = [tmp_path / "one.parquet", tmp_path / "two.parquet"]
    for path in files:
        duckdb.execute(
            f"COPY (SELECT * FROM (VALUES (sha256('mary'), 'Smith', sha256('sf')), (sha256('mary'), 'Smith', ''), "
            f"(sha256('jo'), sha256('lee'), NULL), (upper(sha256('jo')), 'Smith', sha256('sf'))) "
            f"t(FN, LN, CT)) TO '{path}' (FORMAT parquet)"
        )
    con = duckdb.connect()
    assert outbound_cell_problems(con, files, ["FN", "LN", "CT"]) == {"FN": 2, "LN": 6}
    assert outbound_cell_problems(con, files[:1], ["CT", "LN"]) == {"LN": 3}
    assert outbound_cell_problems(con, files[:1], ["LN", "LN", "FN"]) == {"LN": 3, "FN": 1}  # once per key


def test_privacy_floor():
    audience = load_config().audiences["young_gamers"].model_copy(update={"mode": "mirror", "min_size": 100})
    assert checks.privacy_floor("young_gamers", 100, audience).passed
    below = checks.privacy_floor("young_gamers", 99, audience)
    assert not below.passed and below.severity == dg.AssetCheckSeverity.ERROR
    assert "has 99 members, below its privacy floor of 100" in below.description
    removal = audience.model_copy(update={"mode": "remove"})
    assert checks.privacy_floor("young_gamers", 5, removal).passed  # its floor applies to what stays on Meta


def test_warnings():
    assert match_rate(0.4, 0.01).passed
    low = match_rate(0.005, 0.01)
    assert not low.passed and low.severity == dg.AssetCheckSeverity.WARN
    assert checks.invalid_entry_rate(1, 100, 0.05).passed and not checks.invalid_entry_rate(10, 100, 0.05).passed
    assert checks.count_direction(1000, 1200, 300).passed and not checks.count_direction(1000, 900, 300).passed
    assert checks.count_direction(1000, 900, -50).passed and not checks.count_direction(1000, 1100, -50).passed
    assert checks.count_direction(-1, 900, 50).passed and checks.count_direction(None, 900, 50).passed  # unknown yet


@pytest.mark.slow
def test_a_plaintext_cell_stops_the_upload_and_a_low_match_rate_only_warns(tmp_path: Path):
    data = tmp_path / "data"
    generate(data, customers=20_000, seed=5)
    config_dir = copy_config(tmp_path / "config")
    (config_dir / "partners.yaml").write_text(
        (config_dir / "partners.yaml")
        .read_text()
        .replace("    match_keys: [EMAIL, PHONE]\n", "    match_keys: [EMAIL, PHONE]\n    min_match_rate: 0.99\n")
    )
    settings = Settings(data_dir=data, config_dir=config_dir, demo_data=False)
    with dg.instance_for_test() as instance:
        assert run_pipeline(settings, instance, out=io.StringIO())  # warnings do not fail runs
        evaluations = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("clean_room_matches"), MATCH_RATE)]
        )
        record = evaluations[dg.AssetCheckKey(dg.AssetKey("clean_room_matches"), MATCH_RATE)]
        assert record.event.dagster_event.event_specific_data.passed is False  # about 40% < 99%: a warning

        # Someone's plaintext email slips into the staged payload: the chunks must not become an upload plan.
        customers = data / layout.FIRST_PARTY_CUSTOMERS
        con = duckdb.connect()
        con.execute(f"CREATE TABLE c AS SELECT * FROM read_parquet('{customers}')")
        members = data / layout.audience_members("travel_enthusiasts")
        con.execute(
            "UPDATE c SET EMAIL = 'leaked.person@example.com' WHERE customer_id = (SELECT min(customer_id) FROM c "
            f"WHERE customer_id IN (SELECT customer_id FROM read_parquet('{members}')))"
        )
        con.execute(f"COPY c TO '{customers}' (FORMAT parquet)")
        con.close()
        config = load_config(config_dir)
        sandbox = GraphSandbox(data / "meta_sandbox" / "graph.sqlite")
        audience_id = sandbox.audience_id(config.audiences["travel_enthusiasts"].meta_name)
        before = sandbox.member_keys(audience_id)
        result = dg.materialize(
            list(build_definitions(settings).assets),
            selection=["audience_chunks", "meta_custom_audience"],
            partition_key="travel_enthusiasts",
            resources=build_resources(settings),
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert [e.check_name for e in failed] == [checks.HASHED_CELLS]
        assert not result.asset_materializations_for_node("meta_custom_audience")
        assert not (data / layout.upload_plan("travel_enthusiasts")).exists()
        assert sandbox.member_keys(audience_id) == before
        sandbox.close()
