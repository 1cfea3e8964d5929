"""Asset checks: each fails on crafted bad data and passes on good data; a blocking check stops the upload."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from audience_assets.core.audience.outbound import outbound_cell_problems
from audience_assets.core.config import load_config
from audience_assets.core.ingestion.read import FileReport, IngestReport
from audience_assets.defs.activation import checks
from audience_assets.defs.clean_room.checks import match_rate
from audience_assets.defs.ingest.checks import row_accounting


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
