"""Opt-outs: everyone who must never be sent, as hashed keys (and customer ids when the file has them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from audience_assets.core.config import FileContract
from audience_assets.core.duck import DIGEST_PARQUET, sql_path
from audience_assets.core.identity import sql as idsql
from audience_assets.core.ingestion.passes import (
    hashed_match_columns,
    judge,
    load_all,
    no_identifier,
    quarantine_verdicts,
    standard_view,
    usable_rows,
    write_quarantine,
)
from audience_assets.core.ingestion.read import IngestReport, create_quarantine, staged_rows_view
from audience_assets.core.store import Store, StoredObject


def ingest_suppression(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    files: Sequence[StoredObject],
    *,
    contract: FileContract,
    out_table: Path,
    out_quarantine: Path,
    work_dir: Path,
) -> IngestReport:
    """Everyone who opted out, as hashed keys (and customer ids when the file has them). No files means
    nobody opted out yet, which is a valid state."""
    keys = ["EMAIL", "PHONE", "MADID"]
    if files:
        report = load_all(
            con, store, files, contract, "suppression", required=contract.required_columns(), work_dir=work_dir
        )
    else:
        report = IngestReport()
        create_quarantine(con, "aa_quarantine")
        staged_rows_view(con, "aa_rows", [], contract.readable_columns())
    idsql.install(con)
    query = idsql.meta_cells_query(
        con,
        standard_view(contract),
        keys=keys,
        default_country=contract.default_country,
        keep=["aa_file", "aa_row", "customer_id"],
    )
    rows = f"(SELECT * REPLACE (trim(coalesce(customer_id, '')) AS customer_id) FROM ({query}))"
    usable, why = no_identifier(keys)
    judge(con, report, rows, keys, f"CASE WHEN NOT ({usable} OR customer_id <> '') THEN {why} END", work_dir)
    quarantine_verdicts(con, report)
    con.execute(
        f"COPY (SELECT DISTINCT nullif(customer_id, '') AS customer_id, {hashed_match_columns(keys)} "
        f"FROM {usable_rows(rows)}) TO {sql_path(out_table)} ({DIGEST_PARQUET})"
    )
    write_quarantine(con, out_quarantine)
    return report
