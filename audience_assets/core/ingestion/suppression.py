"""Opt-outs: everyone who must never be sent, as hashed keys (and customer ids when the file has them)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import duckdb

from audience_assets.core import layout
from audience_assets.core.config import FileContract
from audience_assets.core.duck import DIGEST_PARQUET, connect, sql_path
from audience_assets.core.identity import sql as idsql
from audience_assets.core.ingestion.passes import (
    classify_rows,
    hashed_match_columns,
    load_all,
    no_identifier,
    quarantine_verdicts,
    standard_view,
    usable_rows,
    write_quarantine,
)
from audience_assets.core.ingestion.read import IngestReport, create_quarantine, staged_rows_view
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, InflationLimits
from audience_assets.core.scratch import scratch
from audience_assets.core.store import Store, StoredObject, optional_copy


def ingest_suppression(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    files: Sequence[StoredObject],
    *,
    contract: FileContract,
    out_table: Path,
    out_quarantine: Path,
    work_dir: Path,
    retired: Sequence[Path] = (),
    limits: InflationLimits = DEFAULT_LIMITS,
) -> IngestReport:
    """Everyone who opted out, as hashed keys (and customer ids when the file has them), plus `retired`: hashed
    opt-out lists kept from before (the previous published list, and the opt-outs whose plaintext files
    retention deleted), so the list only grows: an opt-out is never forgotten, whatever happens to a file.
    No files means nobody opted out yet, which is a valid state."""
    keys = ["EMAIL", "PHONE", "MADID"]
    if files:
        report = load_all(
            con,
            store,
            files,
            contract,
            "suppression",
            required=contract.required_columns(),
            work_dir=work_dir,
            limits=limits,
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
    classify_rows(con, report, rows, keys, f"CASE WHEN NOT ({usable} OR customer_id <> '') THEN {why} END", work_dir)
    quarantine_verdicts(con, report)
    current = f"SELECT nullif(customer_id, '') AS customer_id, {hashed_match_columns(keys)} FROM {usable_rows(rows)}"
    for kept in retired:
        current += f" UNION ALL SELECT * FROM read_parquet({sql_path(kept)})"
    con.execute(f"COPY (SELECT DISTINCT * FROM ({current})) TO {sql_path(out_table)} ({DIGEST_PARQUET})")
    write_quarantine(con, out_quarantine)
    return report


def archive_published_opt_outs(store: Store) -> int:
    """Fold the published suppression list (hashes only) into the retired archive; returns the archive's rows.
    Retention calls this before deleting ingested opt-out files, so their opt-outs outlive their plaintext."""
    with scratch("retention") as tmp, connect(tmp) as con, contextlib.ExitStack() as stack:
        published = stack.enter_context(optional_copy(store, layout.SUPPRESSION_LIST))
        if published is None:
            return 0
        retired = stack.enter_context(optional_copy(store, layout.SUPPRESSION_RETIRED))
        parts = [f"SELECT * FROM read_parquet({sql_path(p)})" for p in (published, retired) if p is not None]
        out = tmp / "retired.parquet"
        con.execute(
            f"COPY (SELECT DISTINCT * FROM ({' UNION ALL '.join(parts)})) TO {sql_path(out)} ({DIGEST_PARQUET})"
        )
        rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(out)})").fetchall()[0][0]
        store.upload(out, layout.SUPPRESSION_RETIRED)
        return rows
