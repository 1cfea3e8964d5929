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

from audience_assets.core.cleanroom import IDENTITIES_KEY, IDENTITY_COLUMNS, MATCH_COLUMNS, PARTNER_IDENTITY
from audience_assets.core.config import FileContract, PartnerContract
from audience_assets.core.duck import DIGEST_PARQUET, sql_path
from audience_assets.core.identity import sql as idsql
from audience_assets.core.identity.rules import STANDARD_COLUMNS
from audience_assets.core.ingestion import (ContractViolation, IngestReport, create_quarantine, load_file, prehashed_cell,
                                       staged_rows_view)
from audience_assets.core.store import Store, StoredObject

TEMPORARY_NAME = re.compile(r"(^|/)[._][^/]*$|(\.tmp|\.part|\.crdownload|\.partial|~)$|_\$folder\$$", re.IGNORECASE)


def is_delivery(obj: StoredObject) -> bool:
    """A real delivered file: not a zero-byte folder marker, not a temporary or hidden name."""
    return obj.size > 0 and not obj.key.endswith("/") and not TEMPORARY_NAME.search(obj.key)


def select_files(objects: Iterable[StoredObject], delivery: str) -> list[StoredObject]:
    """The files that make up the current data: the newest one for a snapshot, all for incremental."""
    files = sorted((o for o in objects if is_delivery(o)), key=lambda o: (o.last_modified, o.key))
    return files[-1:] if delivery == "snapshot" else files


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _load_all(con: duckdb.DuckDBPyConnection, store: Store, files: Sequence[StoredObject], contract: FileContract,
              contract_name: str, required: Sequence[str], work_dir: Path) -> IngestReport:
    """Stage every file's rows under `work_dir` as the view `aa_rows`; unreadable lines go to `aa_quarantine`."""
    report = IngestReport()
    wanted = list(dict.fromkeys([*required, *contract.readable_columns()]))
    create_quarantine(con, "aa_quarantine")
    staged = []
    for number, obj in enumerate(files):
        staged.append(work_dir / f"staged-{number:05d}.parquet")
        with store.local_copy(obj.key) as path:
            report.files.append(load_file(con, path, file=obj.key, contract=contract, contract_name=contract_name,
                                          required=required, wanted=wanted, staged=staged[-1], quarantine="aa_quarantine"))
    staged_rows_view(con, "aa_rows", staged, wanted)
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


def _judge(con: duckdb.DuckDBPyConnection, report: IngestReport, rows: str, keys: Sequence[str], verdict: str,
           work_dir: Path, keep: Sequence[str] = ()) -> None:
    """One pass over `rows` into `aa_verdicts` (file, row, `keep`, reason), staged as Parquet under
    `work_dir`: `verdict` is SQL giving NULL for a usable row, else why it is not. Counts every key's
    invalid values into the report. Only the columns read here are computed (DuckDB drops the digests
    nobody reads), so this pass is narrow."""
    invalid = "list_filter([" + ", ".join(f"{{'key': {idsql.q(k)}, 'reason': \"{k}__reason\"}}" for k in keys) + \
        "], lambda x: x.reason <> '')"
    columns = ", ".join(["aa_file", "aa_row", *keep])
    staged = work_dir / "verdicts.parquet"
    con.execute(f"COPY (SELECT {columns}, {verdict} AS reason, {invalid} AS aa_invalid FROM {rows}) "
                f"TO {sql_path(staged)} (FORMAT parquet)")
    con.execute(f"CREATE OR REPLACE TEMP VIEW aa_verdicts AS SELECT * FROM read_parquet({sql_path(staged)})")
    report.invalid_values = {key: Counter() for key in keys}
    for key, reason, n in con.execute("SELECT v.key, v.reason, count(*) FROM (SELECT unnest(aa_invalid) AS v "
                                      "FROM aa_verdicts) GROUP BY ALL").fetchall():
        report.invalid_values[key][reason] = n


def _quarantine_verdicts(con: duckdb.DuckDBPyConnection, report: IngestReport, more: str | None = None) -> None:
    """The rows `aa_verdicts` gives a reason (and the `more` rows: SQL of aa_file, aa_row, reason) go to
    the quarantine and to `aa_unusable`, which the writing pass anti-joins."""
    also = f" UNION ALL {more}" if more else ""
    con.execute("CREATE OR REPLACE TEMP TABLE aa_unusable AS SELECT aa_file, aa_row, reason FROM aa_verdicts "
                f"WHERE reason IS NOT NULL{also}")
    con.execute("INSERT INTO aa_quarantine SELECT aa_file, aa_row, reason FROM aa_unusable")
    by_file = {f.file: f for f in report.files}
    for file, reason, n in con.execute("SELECT aa_file, reason, count(*) FROM aa_unusable GROUP BY ALL").fetchall():
        by_file[file].rows_accepted -= n
        by_file[file].rows_quarantined += n
        by_file[file].quarantine_reasons[reason] += n


def _usable(rows: str) -> str:
    """SQL: `rows` without those `_quarantine_verdicts` set aside (the writing pass)."""
    return f"{rows} r ANTI JOIN aa_unusable u ON r.aa_file = u.aa_file AND r.aa_row = u.aa_row"


def _no_identifier(keys: Sequence[str]) -> tuple[str, str]:
    """(usable condition, reason) for rows that must carry at least one of `keys`."""
    detail = " || ".join(f"CASE WHEN \"{k}__reason\" <> '' THEN '; {k} ' || \"{k}__reason\" ELSE '' END" for k in keys)
    reason = f"'no usable identifier' || CASE WHEN ({detail}) <> '' THEN ' (' || ltrim({detail}, '; ') || ')' ELSE '' END"
    # `__present`, not the cell itself: the verdict then never computes a digest (the writing pass does)
    return " OR ".join(f"\"{k}__present\"" for k in keys), reason


def _write_quarantine(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    con.execute(f"COPY (SELECT * FROM aa_quarantine ORDER BY aa_file, aa_row) TO {sql_path(path)} (FORMAT parquet)")


def _hashed_match_columns(keys: Sequence[str], *, all_keys: bool = True) -> str:
    """Match keys as clean-room columns: NULL when unknown (so blanks never join); device ids hashed.
    With `all_keys`, keys not in `keys` are NULL columns, so every partner table has the same columns."""
    keys = [k for k in MATCH_COLUMNS if k in keys]
    cols = [f"sha256(nullif(\"{k}\", ''))" if k == "MADID" else f"nullif(\"{k}\", '')" for k in keys]
    out = [f"{c} AS {MATCH_COLUMNS[k]}" for c, k in zip(cols, keys)]
    if all_keys:
        out += [f"CAST(NULL AS VARCHAR) AS {col}" for k, col in MATCH_COLUMNS.items() if k not in keys]
    return ", ".join(out)


# ---------------------------------------------------------------------------- partners

def ingest_partner(con: duckdb.DuckDBPyConnection, store: Store, files: Sequence[StoredObject], *, partner: str,
                   contract: PartnerContract, out_table: Path, out_quarantine: Path, work_dir: Path) -> tuple[IngestReport, int]:
    """The partner's clean-room table: `hashed_email, hashed_phone, hashed_madid` (NULL when unknown), the
    identity's `partner_identity` number and `segment_name, segment_value`, one row per non-empty segment
    attribute (an identity without any gets one row with NULL segment). Returns the report and the number
    of distinct identities published."""
    if not files:
        raise ContractViolation(f"no files for partner {partner!r} under landing/partners/{partner}/")
    report = _load_all(con, store, files, contract, partner, required=contract.required_columns(), work_dir=work_dir)
    prehashed = {key: column for column, key in contract.prehashed.items()}
    plain = [k for k in contract.match_keys if k not in prehashed]
    extra = [*contract.segments, *prehashed.values()]
    idsql.install(con)
    query = idsql.meta_cells_query(con, _standard_view(contract, extra), keys=plain, default_country=contract.default_country,
                                   keep=["aa_file", "aa_row", *extra])
    pre_cols = "".join(f", {cell} AS \"{key}\", {why} AS \"{key}__reason\", ({cell}) <> '' AS \"{key}__present\""
                       for key, (cell, why) in ((k, prehashed_cell(c)) for k, c in prehashed.items()))
    rows = f"(SELECT *{pre_cols} FROM ({query}))"
    keys = list(dict.fromkeys([*contract.match_keys, *prehashed]))
    usable, why = _no_identifier(keys)
    _judge(con, report, rows, keys, f"CASE WHEN NOT ({usable}) THEN {why} END", work_dir)
    _quarantine_verdicts(con, report)
    segments = "".join(f", {_q(s)}" for s in contract.segments)
    # The usable rows' identities and segments, streamed: not held, since the usual delivery needs them once.
    ids = f"(SELECT {_hashed_match_columns(keys)}{segments} FROM {_usable(rows)})"
    # Each identity once: whether none of its rows names a segment ("bare": it gets one NULL row) and, per
    # segment, its value when all its rows agree on it, as they do when a partner describes a person once.
    values = {s: f"nullif(trim({_q(s)}), '')" for s in contract.segments}
    no_segment = " AND ".join(f"{v} IS NULL" for v in values.values()) or "TRUE"
    per_segment = "".join(f", min({v}) AS {_q('v_' + s)}, (min({v}) IS NOT DISTINCT FROM max({v}) "
                          f"AND count({v}) IN (0, count(*))) AS {_q('u_' + s)}" for s, v in values.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE aa_identities AS SELECT {IDENTITY_COLUMNS}, bool_and({no_segment}) AS aa_bare"
                f"{per_segment} FROM {ids} GROUP BY ALL")
    uniform = " AND ".join(_q("u_" + s) for s in contract.segments) or "TRUE"
    identities, agreed = con.execute(f"SELECT count(*), coalesce(bool_and({uniform}), TRUE) FROM aa_identities").fetchall()[0]
    # an identity's number is its row in aa_identities (`rowid`): the same on each of its segment rows
    numbered = f"{IDENTITY_COLUMNS}, rowid AS {PARTNER_IDENTITY}"
    no_value = "CAST(NULL AS VARCHAR) AS segment_name, CAST(NULL AS VARCHAR) AS segment_value"
    if agreed:  # one value per identity and segment: its rows are distinct as they stand, no DISTINCT needed
        bare = f"SELECT {numbered}, {no_value} FROM aa_identities WHERE aa_bare"
        table = " UNION ALL ".join([bare, *(f"SELECT {numbered}, {idsql.q(s)}, {_q('v_' + s)} FROM aa_identities "
                                             f"WHERE {_q('v_' + s)} IS NOT NULL" for s in contract.segments)])
    else:  # the rows are normalized a second time here (the usual path does it once) and held for every
        # segment's unpivot. The bare identities go inside the one DISTINCT: a UNION ALL after it makes DuckDB
        # hold its result
        con.execute(f"CREATE OR REPLACE TEMP TABLE aa_ids AS SELECT * FROM {ids}")
        bare = f"SELECT {IDENTITY_COLUMNS}, {no_value} FROM aa_identities WHERE aa_bare"
        unpivot = " UNION ALL ".join(f"SELECT {IDENTITY_COLUMNS}, {idsql.q(s)} AS segment_name, {v} AS segment_value FROM aa_ids"
                                     for s, v in values.items())
        same = " AND ".join(f"t.{c} IS NOT DISTINCT FROM i.{c}" for c in MATCH_COLUMNS.values())
        table = (f"SELECT {', '.join(f't.{c}' for c in MATCH_COLUMNS.values())}, i.rowid AS {PARTNER_IDENTITY}, "
                 f"t.segment_name, t.segment_value FROM (SELECT DISTINCT * FROM (SELECT * FROM ({unpivot}) "
                 f"WHERE segment_value IS NOT NULL UNION ALL {bare})) t JOIN aa_identities i ON {same}")
    con.execute(f"COPY ({table}) TO {sql_path(out_table)} ({DIGEST_PARQUET}, KV_METADATA {{{IDENTITIES_KEY}: '{int(identities)}'}})")
    _write_quarantine(con, out_quarantine)
    return report, identities


# ---------------------------------------------------------------------------- first party

def ingest_first_party(con: duckdb.DuckDBPyConnection, store: Store, files: Sequence[StoredObject], *,
                       contract: FileContract, keys: Sequence[str], out_customers: Path, out_quarantine: Path,
                       work_dir: Path) -> IngestReport:
    """One row per customer: `customer_id` and one Meta payload cell per key. Rows without a customer id,
    without an email, phone or device id, or repeating an earlier customer id are quarantined."""
    if not files:
        raise ContractViolation("no first-party file under landing/first_party/: drop the CRM export there")
    id_column = next((src for src, std in contract.columns.items() if std == "customer_id"), "customer_id")
    report = _load_all(con, store, files, contract, "first_party",
                       required=list(dict.fromkeys([*contract.required_columns(), id_column])), work_dir=work_dir)
    view = _standard_view(contract)
    has_external = con.execute(f"SELECT count(*) FROM {view} WHERE coalesce(external_id, '') <> ''").fetchall()[0][0]
    # EXTERN_ID is the advertiser's own id: external_id when the export has one, else customer_id.
    key_sources = {"EXTERN_ID": "external_id" if has_external else "customer_id"}
    idsql.install(con)
    query = idsql.meta_cells_query(con, view, keys=list(keys), key_sources=key_sources,
                                   default_country=contract.default_country, keep=["aa_file", "aa_row", "customer_id"])
    rows = f"(SELECT * REPLACE (trim(coalesce(customer_id, '')) AS customer_id) FROM ({query}))"
    usable, why = _no_identifier([k for k in ("EMAIL", "PHONE", "MADID") if k in keys])
    _judge(con, report, rows, keys, f"CASE WHEN customer_id = '' THEN 'missing customer_id' WHEN NOT ({usable}) THEN {why} END",
           work_dir, keep=["customer_id"])
    # A repeated customer id: the last usable row wins. Only the repeated ids are ranked.
    _quarantine_verdicts(con, report, more="""
        SELECT aa_file, aa_row, 'duplicate customer_id (the last row wins)' FROM (
          SELECT aa_file, aa_row, row_number() OVER (PARTITION BY customer_id ORDER BY aa_file DESC, aa_row DESC) AS aa_rank
          FROM aa_verdicts WHERE reason IS NULL AND customer_id IN (
            SELECT customer_id FROM aa_verdicts WHERE reason IS NULL GROUP BY customer_id HAVING count(*) > 1))
        WHERE aa_rank > 1""")
    # Pass 2 streams the payload cells of the usable rows straight into Parquet: nothing wide is held.
    cells = ", ".join(f'"{k}"' for k in keys)
    con.execute(f"COPY (SELECT customer_id, {cells} FROM {_usable(rows)}) TO {sql_path(out_customers)} ({DIGEST_PARQUET})")
    _write_quarantine(con, out_quarantine)
    return report


def publish_first_party(con: duckdb.DuckDBPyConnection, customers: Path, out_table: Path, match_keys: Sequence[str]) -> int:
    """The first-party clean-room table: only `customer_id` and the hashed keys partners match on (NULL when
    unknown), the columns the analysis rule and the templates need."""
    con.execute(f"COPY (SELECT customer_id, {_hashed_match_columns(match_keys, all_keys=False)} FROM read_parquet({sql_path(customers)})) "
                f"TO {sql_path(out_table)} ({DIGEST_PARQUET})")
    return con.execute(f"SELECT count(*) FROM read_parquet({sql_path(out_table)})").fetchall()[0][0]


# ---------------------------------------------------------------------------- suppression

def ingest_suppression(con: duckdb.DuckDBPyConnection, store: Store, files: Sequence[StoredObject], *,
                       contract: FileContract, out_table: Path, out_quarantine: Path, work_dir: Path) -> IngestReport:
    """Everyone who opted out, as hashed keys (and customer ids when the file has them). No files means
    nobody opted out yet, which is a valid state."""
    keys = ["EMAIL", "PHONE", "MADID"]
    if files:
        report = _load_all(con, store, files, contract, "suppression", required=contract.required_columns(),
                           work_dir=work_dir)
    else:
        report = IngestReport()
        create_quarantine(con, "aa_quarantine")
        staged_rows_view(con, "aa_rows", [], contract.readable_columns())
    idsql.install(con)
    query = idsql.meta_cells_query(con, _standard_view(contract), keys=keys, default_country=contract.default_country,
                                   keep=["aa_file", "aa_row", "customer_id"])
    rows = f"(SELECT * REPLACE (trim(coalesce(customer_id, '')) AS customer_id) FROM ({query}))"
    usable, why = _no_identifier(keys)
    _judge(con, report, rows, keys, f"CASE WHEN NOT ({usable} OR customer_id <> '') THEN {why} END", work_dir)
    _quarantine_verdicts(con, report)
    con.execute(f"COPY (SELECT DISTINCT nullif(customer_id, '') AS customer_id, {_hashed_match_columns(keys)} "
                f"FROM {_usable(rows)}) TO {sql_path(out_table)} ({DIGEST_PARQUET})")
    _write_quarantine(con, out_quarantine)
    return report
