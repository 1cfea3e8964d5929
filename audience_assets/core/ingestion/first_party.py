"""The advertiser's CRM export: one row per customer id with every Meta key normalized and hashed, and the
first-party clean-room table published from it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

from audience_assets.core.audience import value
from audience_assets.core.audience.ldu import consent_alias, consent_value_sql
from audience_assets.core.config import FileContract
from audience_assets.core.duck import DIGEST_PARQUET, ident, sql_path
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
from audience_assets.core.ingestion.read import ContractViolation, IngestReport
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, InflationLimits
from audience_assets.core.store import Store, StoredObject


def ingest_first_party(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    files: Sequence[StoredObject],
    *,
    contract: FileContract,
    keys: Sequence[str],
    out_customers: Path,
    out_quarantine: Path,
    work_dir: Path,
    consent_columns: Sequence[str] = (),
    value_columns: Sequence[str] = (),
    limits: InflationLimits = DEFAULT_LIMITS,
) -> IngestReport:
    """One row per customer: `customer_id`, one Meta payload cell per key, a digest per consent column (Limited
    Data Use) and the largest valid value of their rows per value column (`core.audience.value`). Rows without a
    customer id, without an email, phone or device id, or repeating an earlier customer id are quarantined."""
    if not files:
        raise ContractViolation("no first-party file under landing/first_party/: drop the CRM export there")
    id_column = next((src for src, std in contract.columns.items() if std == "customer_id"), "customer_id")
    report = load_all(
        con,
        store,
        files,
        contract,
        "first_party",
        required=list(dict.fromkeys([*contract.required_columns(), id_column, *consent_columns, *value_columns])),
        work_dir=work_dir,
        limits=limits,
    )
    consent = {consent_alias(column): column for column in consent_columns}
    values = {value.value_alias(column): column for column in value_columns}
    view = standard_view(contract, aliases={**consent, **values})
    rows = _customer_rows(con, view, contract, keys, consent)
    _judge_customers(con, report, rows, keys, work_dir)
    _customer_values(con, report, view, values)
    _write_customers(con, rows, keys, consent, list(values), out_customers)
    write_quarantine(con, out_quarantine)
    return report


def _customer_rows(
    con: duckdb.DuckDBPyConnection, view: str, contract: FileContract, keys: Sequence[str], aliases: Mapping[str, str]
) -> str:
    """SQL: every loaded row with its payload cells and a trimmed `customer_id`, the ground both passes stand on."""
    has_external = con.execute(f"SELECT count(*) FROM {view} WHERE coalesce(external_id, '') <> ''").fetchall()[0][0]
    # EXTERN_ID is the advertiser's own id: external_id when the export has one, else customer_id.
    key_sources = {"EXTERN_ID": "external_id" if has_external else "customer_id"}
    idsql.install(con)
    query = idsql.meta_cells_query(
        con,
        view,
        keys=list(keys),
        key_sources=key_sources,
        default_country=contract.default_country,
        keep=["aa_file", "aa_row", "customer_id", *aliases],
    )
    return f"(SELECT * REPLACE (trim(coalesce(customer_id, '')) AS customer_id) FROM ({query}))"


def _judge_customers(
    con: duckdb.DuckDBPyConnection, report: IngestReport, rows: str, keys: Sequence[str], work_dir: Path
) -> None:
    """Pass 1: quarantine rows without a customer id or a reachable identifier, and all but the last of a
    repeated customer id, so each customer is published once."""
    usable, why = no_identifier([k for k in ("EMAIL", "PHONE", "MADID") if k in keys])
    classify_rows(
        con,
        report,
        rows,
        keys,
        f"CASE WHEN customer_id = '' THEN 'missing customer_id' WHEN NOT ({usable}) THEN {why} END",
        work_dir,
        keep=["customer_id"],
    )
    # A repeated customer id: the last usable row wins. Only the repeated ids are ranked.
    quarantine_verdicts(
        con,
        report,
        more="""
        SELECT aa_file, aa_row, 'duplicate customer_id (the last row wins)' FROM (
          SELECT aa_file, aa_row, row_number() OVER (PARTITION BY customer_id ORDER BY aa_file DESC, aa_row DESC)
          AS aa_rank
          FROM aa_verdicts WHERE reason IS NULL AND customer_id IN (
            SELECT customer_id FROM aa_verdicts WHERE reason IS NULL GROUP BY customer_id HAVING count(*) > 1))
        WHERE aa_rank > 1""",
    )


def _customer_values(
    con: duckdb.DuckDBPyConnection, report: IngestReport, view: str, values: Mapping[str, str]
) -> None:
    """Each customer's largest valid value per value column (`aa_values`, one row per customer id, in one pass over
    the export), and the cells that hold something other than a plain non-negative number: counted (never shown)."""
    if not values:
        return
    con.execute(f"CREATE OR REPLACE TEMP TABLE aa_values AS {value.per_customer_sql(view, list(values))}")
    counted = ", ".join(f"coalesce(sum({ident(a + '_invalid')}), 0)" for a in values)
    for column, invalid in zip(values.values(), con.execute(f"SELECT {counted} FROM aa_values").fetchall()[0]):
        if invalid:
            report.invalid_values[f"value {column}"] = Counter({"not a plain non-negative number": int(invalid)})


def _write_customers(
    con: duckdb.DuckDBPyConnection,
    rows: str,
    keys: Sequence[str],
    consent: Mapping[str, str],
    values: Sequence[str],
    out_customers: Path,
) -> None:
    """Pass 2 streams the payload cells of the usable rows straight into Parquet: nothing wide is held. `values`
    (aliases) join each customer's values from `aa_values`."""
    digests = [f"{consent_value_sql('r.' + a)} AS {a}" for a in consent]  # Limited Data Use per row, as digests
    cells = ", ".join([*(f"r.{ident(k)}" for k in keys), *digests, *(f"v.{ident(a)}" for a in values)])
    joined = usable_rows(rows)
    if values:
        joined += " LEFT JOIN aa_values v ON v.customer_id = r.customer_id"
    con.execute(f"COPY (SELECT r.customer_id, {cells} FROM {joined}) TO {sql_path(out_customers)} ({DIGEST_PARQUET})")


def publish_first_party(
    con: duckdb.DuckDBPyConnection, customers: Path, out_table: Path, match_keys: Sequence[str]
) -> int:
    """The first-party clean-room table: only `customer_id` and the hashed keys partners match on (NULL when
    unknown), the columns the analysis rule and the templates need."""
    con.execute(
        f"COPY (SELECT customer_id, {hashed_match_columns(match_keys, all_keys=False)} FROM "
        f"read_parquet({sql_path(customers)})) "
        f"TO {sql_path(out_table)} ({DIGEST_PARQUET})"
    )
    return con.execute(f"SELECT count(*) FROM read_parquet({sql_path(out_table)})").fetchall()[0][0]
