"""The passes every kind of delivery goes through: its files staged under their contract, each row's verdict
(usable, or why not) in one narrow pass, unusable rows set aside into the quarantine with their reason, and
the usable ones read once more by the writing pass. Row accounting follows every step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import duckdb

from audience_assets.core.cleanroom.tables import MATCH_COLUMNS
from audience_assets.core.config import FileContract
from audience_assets.core.duck import ident, literal, sql_path
from audience_assets.core.identity.rules import STANDARD_COLUMNS
from audience_assets.core.ingestion.read import FileReport, IngestReport, create_quarantine, load_file, staged_rows_view
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, InflationLimits
from audience_assets.core.store import Store, StoredObject


def load_all(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    files: Sequence[StoredObject],
    contract: FileContract,
    contract_name: str,
    required: Sequence[str],
    work_dir: Path,
    limits: InflationLimits = DEFAULT_LIMITS,
) -> IngestReport:
    """Stage every file's rows under `work_dir` as the view `aa_rows`; unreadable lines go to `aa_quarantine`.
    An empty (0-byte) file of an incremental source adds nothing (an empty "nothing new today" delivery must not
    stop the others); of a snapshot source it fails as the broken export it is (`load_file`)."""
    report = IngestReport()
    wanted = list(dict.fromkeys([*required, *contract.readable_columns()]))
    create_quarantine(con, "aa_quarantine")
    staged = []
    for number, obj in enumerate(files):
        if obj.size == 0 and contract.delivery == "incremental":
            report.files.append(FileReport(obj.key))
            continue
        staged.append(work_dir / f"staged-{number:05d}.parquet")
        with store.local_copy(obj.key) as path:
            report.files.append(
                load_file(
                    con,
                    path,
                    file=obj.key,
                    contract=contract,
                    contract_name=contract_name,
                    required=required,
                    wanted=wanted,
                    staged=staged[-1],
                    quarantine="aa_quarantine",
                    limits=limits,
                )
            )
    staged_rows_view(con, "aa_rows", staged, wanted)
    return report


def standard_view(contract: FileContract, extra: Sequence[str] = (), aliases: dict[str, str] | None = None) -> str:
    """The loaded rows with source columns renamed to standard names, plus `extra` source columns and the
    source columns of `aliases` (alias -> source column) under their alias."""
    renamed = {}
    for column in contract.readable_columns():
        standard = contract.standard_name(column)
        if standard and standard not in renamed:
            renamed[standard] = column
    cols = [
        "aa_file",
        "aa_row",
        *(f"{ident(src)} AS {std}" for std, src in renamed.items()),
        *(ident(c) for c in extra),
        *(f"{ident(src)} AS {ident(alias)}" for alias, src in (aliases or {}).items()),
    ]
    cols += [f"CAST(NULL AS VARCHAR) AS {c}" for c in (*STANDARD_COLUMNS, "customer_id") if c not in renamed]
    return f"(SELECT {', '.join(cols)} FROM aa_rows)"


def classify_rows(
    con: duckdb.DuckDBPyConnection,
    report: IngestReport,
    rows: str,
    keys: Sequence[str],
    verdict: str,
    work_dir: Path,
    keep: Sequence[str] = (),
) -> None:
    """One pass over `rows` into `aa_verdicts` (file, row, `keep`, reason), staged as Parquet under
    `work_dir`: `verdict` is SQL giving NULL for a usable row, else why it is not. Counts every key's
    invalid values into the report. Only the columns read here are computed (DuckDB drops the digests
    nobody reads), so this pass is narrow."""
    invalid = (
        "list_filter(["
        + ", ".join(f"{{'key': {literal(k)}, 'reason': {ident(k + '__reason')}}}" for k in keys)
        + "], lambda x: x.reason <> '')"
    )
    columns = ", ".join(["aa_file", "aa_row", *keep])
    staged = work_dir / "verdicts.parquet"
    con.execute(
        f"COPY (SELECT {columns}, {verdict} AS reason, {invalid} AS aa_invalid FROM {rows}) "
        f"TO {sql_path(staged)} (FORMAT parquet)"
    )
    con.execute(f"CREATE OR REPLACE TEMP VIEW aa_verdicts AS SELECT * FROM read_parquet({sql_path(staged)})")
    report.invalid_values = {key: Counter() for key in keys}
    for key, reason, n in con.execute(
        "SELECT v.key, v.reason, count(*) FROM (SELECT unnest(aa_invalid) AS v FROM aa_verdicts) GROUP BY ALL"
    ).fetchall():
        report.invalid_values[key][reason] = n


def quarantine_verdicts(con: duckdb.DuckDBPyConnection, report: IngestReport, more: str | None = None) -> None:
    """The rows `aa_verdicts` gives a reason (and the `more` rows: SQL of aa_file, aa_row, reason) go to
    the quarantine and to `aa_unusable`, which the writing pass anti-joins."""
    also = f" UNION ALL {more}" if more else ""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE aa_unusable AS SELECT aa_file, aa_row, reason FROM aa_verdicts "
        f"WHERE reason IS NOT NULL{also}"
    )
    con.execute("INSERT INTO aa_quarantine SELECT aa_file, aa_row, reason FROM aa_unusable")
    by_file = {f.file: f for f in report.files}
    for file, reason, n in con.execute("SELECT aa_file, reason, count(*) FROM aa_unusable GROUP BY ALL").fetchall():
        by_file[file].rows_accepted -= n
        by_file[file].rows_quarantined += n
        by_file[file].quarantine_reasons[reason] += n


def usable_rows(rows: str) -> str:
    """SQL: `rows` without those `quarantine_verdicts` set aside (the writing pass)."""
    return f"{rows} r ANTI JOIN aa_unusable u ON r.aa_file = u.aa_file AND r.aa_row = u.aa_row"


def no_identifier(keys: Sequence[str]) -> tuple[str, str]:
    """(usable condition, reason) for rows that must carry at least one of `keys`."""
    detail = " || ".join(
        f"CASE WHEN {ident(k + '__reason')} <> '' THEN {literal('; ' + k + ' ')} || {ident(k + '__reason')} ELSE '' END"
        for k in keys
    )
    reason = (
        f"'no usable identifier' || CASE WHEN ({detail}) <> '' THEN ' (' || ltrim({detail}, '; ') || ')' ELSE '' END"
    )
    # `__present`, not the cell itself: the verdict then never computes a digest (the writing pass does)
    return " OR ".join(ident(k + "__present") for k in keys), reason


def write_quarantine(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    con.execute(f"COPY (SELECT * FROM aa_quarantine ORDER BY aa_file, aa_row) TO {sql_path(path)} (FORMAT parquet)")


def hashed_match_columns(keys: Sequence[str], *, all_keys: bool = True) -> str:
    """Match keys as clean-room columns: NULL when unknown (so blanks never join); device ids hashed.
    With `all_keys`, keys not in `keys` are NULL columns, so every partner table has the same columns."""
    keys = [k for k in MATCH_COLUMNS if k in keys]
    cols = [f"sha256(nullif({ident(k)}, ''))" if k == "MADID" else f"nullif({ident(k)}, '')" for k in keys]
    out = [f"{c} AS {MATCH_COLUMNS[k]}" for c, k in zip(cols, keys)]
    if all_keys:
        out += [f"CAST(NULL AS VARCHAR) AS {col}" for k, col in MATCH_COLUMNS.items() if k not in keys]
    return ", ".join(out)
