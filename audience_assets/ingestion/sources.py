"""The three kinds of delivery, from landed files to normalized, hashed Parquet.

* partner data -> the partner's clean-room table: hashed match keys and one row per segment attribute;
* first-party CRM export -> Meta payload cells per customer (hashed per Meta's rules);
* suppression (opt-outs) -> hashed keys of everyone who must never be sent.

Each returns an `IngestReport` with exact row accounting. Values never leave DuckDB except as hashes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb

from audience_assets.config import FileContract, PartnerContract
from audience_assets.duck import sql_path
from audience_assets.identity import sql as idsql
from audience_assets.identity.rules import STANDARD_COLUMNS
from audience_assets.ingestion import ContractViolation, IngestReport, create_tables, load_file, prehashed_cell
from audience_assets.resources.storage import Storage, StoredObject

TEMPORARY_NAME = re.compile(r"(^|/)[._][^/]*$|(\.tmp|\.part|\.crdownload|\.partial|~)$|_\$folder\$$", re.IGNORECASE)
MATCH_COLUMNS = {"EMAIL": "hashed_email", "PHONE": "hashed_phone", "MADID": "hashed_madid"}
IDENTITY = ", ".join(MATCH_COLUMNS.values())


def is_delivery(obj: StoredObject) -> bool:
    """A real delivered file: not a zero-byte folder marker, not a temporary or hidden name."""
    return obj.size > 0 and not obj.key.endswith("/") and not TEMPORARY_NAME.search(obj.key)


def select_files(objects: Iterable[StoredObject], delivery: str) -> list[StoredObject]:
    """The files that make up the current data: the newest one for a snapshot, all for incremental."""
    files = sorted((o for o in objects if is_delivery(o)), key=lambda o: (o.last_modified, o.key))
    return files[-1:] if delivery == "snapshot" else files


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _load_all(con: duckdb.DuckDBPyConnection, storage: Storage, files: Sequence[StoredObject], contract: FileContract,
              contract_name: str, required: Sequence[str]) -> IngestReport:
    report = IngestReport()
    wanted = list(dict.fromkeys([*required, *contract.readable_columns()]))
    create_tables(con, "aa_rows", "aa_quarantine", wanted)
    for obj in files:
        with storage.local_copy(obj.key) as path:
            report.files.append(load_file(con, path, file=obj.key, contract=contract, contract_name=contract_name,
                                          required=required, wanted=wanted, table="aa_rows", quarantine="aa_quarantine"))
    return report


def _standard_view(contract: FileContract, extra: Sequence[str] = ()) -> str:
    """The loaded rows with source columns renamed to standard names, plus `extra` source columns."""
    renamed = {}
    for column in contract.readable_columns():
        standard = contract.standard_name(column)
        if standard and standard not in renamed:
            renamed[standard] = column
    cols = ["aa_file", "aa_row", *(f"{_q(src)} AS {std}" for std, src in renamed.items()), *(_q(c) for c in extra)]
    cols += [f"CAST(NULL AS VARCHAR) AS {c}" for c in (*STANDARD_COLUMNS, "customer_id") if c not in renamed]
    return f"(SELECT {', '.join(cols)} FROM aa_rows)"


def _quarantine_unusable(con: duckdb.DuckDBPyConnection, report: IngestReport, table: str, usable: str, why: str) -> None:
    """Move the rows of `table` failing `usable` to the quarantine, with the reason `why` (SQL)."""
    counts = con.execute(f"SELECT aa_file, {why} AS reason, count(*) FROM {table} WHERE NOT ({usable}) GROUP BY ALL").fetchall()
    con.execute(f"INSERT INTO aa_quarantine SELECT aa_file, aa_row, {why} FROM {table} WHERE NOT ({usable})")
    con.execute(f"DELETE FROM {table} WHERE NOT ({usable})")
    by_file = {f.file: f for f in report.files}
    for file, reason, n in counts:
        by_file[file].rows_accepted -= n
        by_file[file].rows_quarantined += n
        by_file[file].quarantine_reasons[reason] += n


def _invalid_counts(con: duckdb.DuckDBPyConnection, table: str, keys: Sequence[str]) -> dict[str, Counter]:
    return {key: Counter(dict(con.execute(f'SELECT "{key}__reason", count(*) FROM {table} '
                                          f'WHERE "{key}__reason" <> \'\' GROUP BY 1').fetchall())) for key in keys}


def _no_identifier(keys: Sequence[str]) -> tuple[str, str]:
    """(usable condition, reason) for rows that must carry at least one of `keys`."""
    detail = " || ".join(f"CASE WHEN \"{k}__reason\" <> '' THEN '; {k} ' || \"{k}__reason\" ELSE '' END" for k in keys)
    reason = f"'no usable identifier' || CASE WHEN ({detail}) <> '' THEN ' (' || ltrim({detail}, '; ') || ')' ELSE '' END"
    return " OR ".join(f"\"{k}\" <> ''" for k in keys), reason


def _write_quarantine(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    con.execute(f"COPY (SELECT * FROM aa_quarantine ORDER BY aa_file, aa_row) TO {sql_path(path)} (FORMAT parquet)")


def _hashed_match_columns(keys: Sequence[str]) -> str:
    """Match keys as clean-room columns: NULL when unknown (so blanks never join); device ids hashed."""
    cols = [f"sha256(nullif(\"{k}\", ''))" if k == "MADID" else f"nullif(\"{k}\", '')" for k in keys]
    out = [f"{c} AS {MATCH_COLUMNS[k]}" for c, k in zip(cols, keys)]
    out += [f"CAST(NULL AS VARCHAR) AS {col}" for k, col in MATCH_COLUMNS.items() if k not in keys]
    return ", ".join(out)


# ---------------------------------------------------------------------------- partners

def ingest_partner(con: duckdb.DuckDBPyConnection, storage: Storage, files: Sequence[StoredObject], *, partner: str,
                   contract: PartnerContract, out_table: Path, out_quarantine: Path) -> tuple[IngestReport, int]:
    """The partner's clean-room table: `hashed_email, hashed_phone, hashed_madid` (NULL when unknown) and
    `segment_name, segment_value`, one row per non-empty segment attribute (an identity without any gets
    one row with NULL segment). Returns the report and the number of distinct identities published."""
    if not files:
        raise ContractViolation(f"no files for partner {partner!r} under landing/partners/{partner}/")
    report = _load_all(con, storage, files, contract, partner, required=contract.required_columns())
    prehashed = {key: column for column, key in contract.prehashed.items()}
    plain = [k for k in contract.match_keys if k not in prehashed]
    extra = [*contract.segments, *prehashed.values()]
    idsql.install(con)
    query = idsql.meta_cells_query(con, _standard_view(contract, extra), keys=plain, default_country=contract.default_country,
                                   keep=["aa_file", "aa_row", *extra])
    pre_cols = "".join(f", {cell} AS \"{key}\", {why} AS \"{key}__reason\""
                       for key, (cell, why) in ((k, prehashed_cell(c)) for k, c in prehashed.items()))
    con.execute(f"CREATE OR REPLACE TEMP TABLE aa_cells AS SELECT *{pre_cols} FROM ({query})")
    keys = list(dict.fromkeys([*contract.match_keys, *prehashed]))
    report.invalid_values = _invalid_counts(con, "aa_cells", keys)
    _quarantine_unusable(con, report, "aa_cells", *_no_identifier(keys))
    segments = "".join(f", {_q(s)}" for s in contract.segments)
    con.execute(f"CREATE OR REPLACE TEMP TABLE aa_ids AS SELECT {_hashed_match_columns(keys)}{segments} FROM aa_cells")
    unpivot = " UNION ALL ".join(
        f"SELECT {IDENTITY}, {idsql.q(s)} AS segment_name, nullif(trim({_q(s)}), '') AS segment_value FROM aa_ids"
        for s in contract.segments) or f"SELECT {IDENTITY}, NULL AS segment_name, NULL AS segment_value FROM aa_ids WHERE FALSE"
    con.execute(f"""
        COPY (
          WITH named AS (SELECT DISTINCT * FROM ({unpivot}) WHERE segment_value IS NOT NULL),
          bare AS (SELECT DISTINCT {IDENTITY} FROM aa_ids EXCEPT SELECT DISTINCT {IDENTITY} FROM named)
          SELECT * FROM named
          UNION ALL SELECT {IDENTITY}, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR) FROM bare
        ) TO {sql_path(out_table)} (FORMAT parquet)""")
    identities = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {IDENTITY} FROM aa_ids)").fetchall()[0][0]
    _write_quarantine(con, out_quarantine)
    return report, identities


# ---------------------------------------------------------------------------- first party

def ingest_first_party(con: duckdb.DuckDBPyConnection, storage: Storage, files: Sequence[StoredObject], *,
                       contract: FileContract, keys: Sequence[str], out_customers: Path, out_quarantine: Path) -> IngestReport:
    """One row per customer: `customer_id` and one Meta payload cell per key. Rows without a customer id,
    without an email, phone or device id, or repeating an earlier customer id are quarantined."""
    if not files:
        raise ContractViolation("no first-party file under landing/first_party/: drop the CRM export there")
    id_column = next((src for src, std in contract.columns.items() if std == "customer_id"), "customer_id")
    report = _load_all(con, storage, files, contract, "first_party",
                       required=list(dict.fromkeys([*contract.required_columns(), id_column])))
    view = _standard_view(contract)
    has_external = con.execute(f"SELECT count(*) FROM {view} WHERE coalesce(external_id, '') <> ''").fetchall()[0][0]
    # EXTERN_ID is the advertiser's own id: external_id when the export has one, else customer_id.
    key_sources = {"EXTERN_ID": "external_id" if has_external else "customer_id"}
    idsql.install(con)
    query = idsql.meta_cells_query(con, view, keys=list(keys), key_sources=key_sources,
                                   default_country=contract.default_country, keep=["aa_file", "aa_row", "customer_id"])
    con.execute(f"CREATE OR REPLACE TEMP TABLE aa_cells AS SELECT * REPLACE (trim(coalesce(customer_id, '')) AS customer_id) "
                f"FROM ({query})")
    report.invalid_values = _invalid_counts(con, "aa_cells", keys)
    _quarantine_unusable(con, report, "aa_cells", "customer_id <> ''", "'missing customer_id'")
    _quarantine_unusable(con, report, "aa_cells", *_no_identifier([k for k in ("EMAIL", "PHONE", "MADID") if k in keys]))
    con.execute("CREATE OR REPLACE TEMP TABLE aa_cells AS SELECT *, row_number() OVER (PARTITION BY customer_id "
                "ORDER BY aa_file DESC, aa_row DESC) AS aa_rank FROM aa_cells")
    _quarantine_unusable(con, report, "aa_cells", "aa_rank = 1", "'duplicate customer_id (the last row wins)'")
    cells = ", ".join(f'"{k}"' for k in keys)
    con.execute(f"COPY (SELECT customer_id, {cells} FROM aa_cells ORDER BY customer_id) TO {sql_path(out_customers)} "
                "(FORMAT parquet)")
    _write_quarantine(con, out_quarantine)
    return report


def publish_first_party(con: duckdb.DuckDBPyConnection, customers: Path, out_table: Path, match_keys: Sequence[str]) -> int:
    """The first-party clean-room table: only `customer_id` and the hashed match keys (NULL when unknown)."""
    con.execute(f"COPY (SELECT customer_id, {_hashed_match_columns(match_keys)} FROM read_parquet({sql_path(customers)})) "
                f"TO {sql_path(out_table)} (FORMAT parquet)")
    return con.execute(f"SELECT count(*) FROM read_parquet({sql_path(out_table)})").fetchall()[0][0]


# ---------------------------------------------------------------------------- suppression

def ingest_suppression(con: duckdb.DuckDBPyConnection, storage: Storage, files: Sequence[StoredObject], *,
                       contract: FileContract, out_table: Path, out_quarantine: Path) -> IngestReport:
    """Everyone who opted out, as hashed keys (and customer ids when the file has them). No files means
    nobody opted out yet, which is a valid state."""
    keys = ["EMAIL", "PHONE", "MADID"]
    if files:
        report = _load_all(con, storage, files, contract, "suppression", required=contract.required_columns())
    else:
        report = IngestReport()
        create_tables(con, "aa_rows", "aa_quarantine", contract.readable_columns())
    idsql.install(con)
    query = idsql.meta_cells_query(con, _standard_view(contract), keys=keys, default_country=contract.default_country,
                                   keep=["aa_file", "aa_row", "customer_id"])
    con.execute(f"CREATE OR REPLACE TEMP TABLE aa_cells AS SELECT * REPLACE (trim(coalesce(customer_id, '')) AS customer_id) "
                f"FROM ({query})")
    report.invalid_values = _invalid_counts(con, "aa_cells", keys)
    usable, why = _no_identifier(keys)
    _quarantine_unusable(con, report, "aa_cells", f"{usable} OR customer_id <> ''", why)
    con.execute(f"COPY (SELECT DISTINCT nullif(customer_id, '') AS customer_id, {_hashed_match_columns(keys)} FROM aa_cells) "
                f"TO {sql_path(out_table)} (FORMAT parquet)")
    _write_quarantine(con, out_quarantine)
    return report
