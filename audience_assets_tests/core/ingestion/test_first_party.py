"""The CRM export's row verdicts: every row is a customer or quarantined with its reason, and the counts balance."""

from __future__ import annotations

import duckdb

from audience_assets.core.config import FirstPartyContract
from audience_assets.core.identity import meta_value
from audience_assets.core.ingestion.first_party import ingest_first_party
from audience_assets.core.store import LocalStore

HEADER = "customer_id,email,phone,first_name"
ROWS = [
    "C1,ann@example.com,,Ann",  # 1 kept
    ",bob@example.com,,Bob",  # 2 missing customer_id
    "C3,not-an-email,12,Cy",  # 3 no usable identifier (EMAIL missing @, PHONE too short)
    "C4,dee@example.com,,Dee",  # 4 duplicate: row 6 is the last usable row of C4
    "C5,eve@example.com,,Eve",  # 5 kept
    "C4,dee.new@example.com,,Deanna",  # 6 kept: the last usable row of C4
    "C4,,,Nobody",  # 7 no usable identifier: it does not win C4
]


def test_rows_are_kept_or_quarantined_with_their_reason(tmp_path):
    storage = LocalStore(str(tmp_path / "data"))
    export = tmp_path / "crm.csv"
    export.write_text("\n".join([HEADER, *ROWS]) + "\n")
    storage.upload(export, "landing/first_party/crm.csv")
    files = list(storage.list("landing/first_party/"))
    customers, quarantine = tmp_path / "customers.parquet", tmp_path / "quarantine.parquet"
    with duckdb.connect() as con:
        report = ingest_first_party(
            con,
            storage,
            files,
            contract=FirstPartyContract(default_country="US"),
            keys=["EMAIL", "PHONE", "FN"],
            out_customers=customers,
            out_quarantine=quarantine,
            work_dir=tmp_path,
        )
        kept = sorted(con.execute(f"SELECT customer_id, EMAIL, FN FROM read_parquet('{customers}')").fetchall())
        held = con.execute(f"SELECT aa_row, reason FROM read_parquet('{quarantine}') ORDER BY aa_row").fetchall()
    assert kept == [
        ("C1", meta_value("EMAIL", "ann@example.com"), meta_value("FN", "Ann")),
        ("C4", meta_value("EMAIL", "dee.new@example.com"), meta_value("FN", "Deanna")),
        ("C5", meta_value("EMAIL", "eve@example.com"), meta_value("FN", "Eve")),
    ]
    assert held == [
        (2, "missing customer_id"),
        (3, "no usable identifier (EMAIL missing @; PHONE too short)"),
        (4, "duplicate customer_id (the last row wins)"),
        (7, "no usable identifier"),
    ]
    assert (report.rows_read, report.rows_accepted, report.rows_quarantined) == (7, 3, 4)
    assert report.invalid_summary() == {"EMAIL": "1 missing @", "PHONE": "1 too short"}


def test_row_numbers_follow_the_file_on_a_file_read_in_parallel(tmp_path):
    """Quarantine row numbers and "the last row wins" follow the file's order even when DuckDB reads the
    file in parallel pieces (a file of several read buffers, with insertion order off as in production)."""
    from audience_assets.core.duck import connect

    n, bad = 700_000, {17, 250_001, 512_345, 699_999}
    export = tmp_path / "crm.csv"
    with export.open("w") as handle:
        handle.write("customer_id,email\n")
        for i in range(1, n + 1):
            handle.write(f"C{i},{'no-at-sign' if i in bad else f'u{i}@example.com'}\n")
        handle.write("C600000,last.wins@example.com\n")  # row n + 1 repeats row 600,000's customer id
    storage = LocalStore(str(tmp_path / "data"))
    storage.upload(export, "landing/first_party/crm.csv")
    files = list(storage.list("landing/first_party/"))
    customers, quarantine = tmp_path / "customers.parquet", tmp_path / "quarantine.parquet"
    with connect(tmp_path, threads=2) as con:
        ingest_first_party(
            con,
            storage,
            files,
            contract=FirstPartyContract(default_country="US"),
            keys=["EMAIL"],
            out_customers=customers,
            out_quarantine=quarantine,
            work_dir=tmp_path,
        )
        held = con.execute(f"SELECT aa_row, reason FROM read_parquet('{quarantine}') ORDER BY aa_row").fetchall()
        winner = con.execute(f"SELECT EMAIL FROM read_parquet('{customers}') WHERE customer_id = 'C600000'").fetchall()
    assert held == sorted(
        [(i, "no usable identifier (EMAIL missing @)") for i in bad]
        + [(600_000, "duplicate customer_id (the last row wins)")]
    )
    assert winner == [(meta_value("EMAIL", "last.wins@example.com"),)]
