"""Reading delivered files under their contract: validation, quarantine and exact row accounting.

A file whose columns do not satisfy the contract fails as a whole, with a message naming the file, the
missing or unexpected columns and the contract. Inside a valid file, a row that cannot be used (wrong
column count, undecodable text, no usable identifier) goes to the quarantine table with its reason;
nothing is dropped silently, and rows read = rows accepted + rows quarantined, per file.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from audience_assets.core.config import FileContract
from audience_assets.core.duck import ident, literal, parquet_columns, sql_path
from audience_assets.core.identity.rules import HEX64, STANDARD_COLUMNS, re2
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, FileRejected, InflationLimits, scan_text

# A quarantined row is referenced by its file and row (or, for an unreadable line, its line number) and
# never copied: the personal data stays in the landing file, under that file's retention.
QUARANTINE_COLUMNS = "aa_file VARCHAR, aa_row BIGINT, reason VARCHAR"


class ContractViolation(ValueError):
    """A whole file does not satisfy its contract; nothing of it is used."""


def violation(file: str, problem: str, contract: FileContract, contract_name: str) -> ContractViolation:
    """The one place a contract violation is worded: the file, the problem (by position, type and count, never
    a value), what the contract declares, and that nothing of the file is used."""
    declared = contract.format if contract.format == "parquet" else f"{contract.format} in {contract.encoding}"
    return ContractViolation(
        f"{file} {problem}; the {contract_name} contract declares {declared} (see partners.yaml). "
        "Nothing of the file is used."
    )


_IDENTIFYING = re.compile(r"\S*@\S*|\+?\d[\d ().-]{5,}\d")


def error_detail(error: BaseException) -> str:
    """A reader's error (DuckDB, gzip, csv) reduced to what it says about the file, never what the file says:
    its first line, cut where a quotation starts (DuckDB quotes the offending value or line, and a value may
    itself hold quotes: "O'Brien"), with anything that looks like an email or a phone number replaced."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    cut = min((i for i in (first.find("'"), first.find('"')) if i >= 0), default=len(first))
    return _IDENTIFYING.sub("<value>", first[:cut].rstrip(" :"))[:300]


@dataclass
class FileReport:
    """Row accounting for one file: read = accepted + quarantined."""

    file: str
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: Counter = field(default_factory=Counter)


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)
    invalid_values: dict[str, Counter] = field(default_factory=dict)  # Meta key -> reason -> count

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_accepted(self) -> int:
        return sum(f.rows_accepted for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)

    @property
    def out_of_balance(self) -> list[str]:
        """Files whose rows read are not rows accepted + rows quarantined (something lost or invented)."""
        return [f.file for f in self.files if f.rows_read != f.rows_accepted + f.rows_quarantined]

    def quarantine_reasons(self) -> Counter:
        total: Counter = Counter()
        for report in self.files:
            total.update(report.quarantine_reasons)
        return total

    def invalid_summary(self) -> dict[str, str]:
        """Per key, e.g. {"PHONE": "132 too short, 4 no digits"}: counts and reasons, never values."""
        return {
            key: ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            for key, reasons in sorted(self.invalid_values.items())
            if reasons
        }


def _header(con: duckdb.DuckDBPyConnection, path: Path, contract: FileContract) -> list[str]:
    if contract.format == "parquet":
        return parquet_columns(con, path)
    if contract.format == "jsonl":
        rows = con.execute(
            f"SELECT DISTINCT unnest(json_keys(line::JSON)) FROM {_json_lines(path, contract)} WHERE json_valid(line) "
            "AND json_type(line::JSON) = 'OBJECT'"
        ).fetchall()
        return sorted(row[0] for row in rows)
    if not contract.header:
        return list(contract.column_names or [])
    encoding = "utf-8-sig" if contract.encoding == "utf-8" else contract.encoding
    opener = gzip.open if _is_gzip(path) else open
    # Undecodable bytes further down belong to rows (DuckDB quarantines those); only the header must decode.
    with opener(path, "rt", encoding=encoding, errors="replace", newline="") as handle:  # type: ignore[operator]
        first = next(csv.reader(handle, delimiter=contract.delimiter), [])
    if any("\ufffd" in name for name in first):
        raise UnicodeDecodeError(contract.encoding, b"", 0, 1, "the header row is not valid text in this encoding")
    return [name.strip() for name in first]


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _json_lines(path: Path, contract: FileContract) -> str:
    return (
        f"read_csv({sql_path(path)}, columns = {{'line': 'VARCHAR'}}, header = false, delim = '\\x1e', "
        f"quote = '', escape = '', encoding = {literal(contract.encoding)}, auto_detect = false)"
    )


def check_columns(
    file: str, header: Sequence[str], contract: FileContract, *, required: Sequence[str], contract_name: str
) -> None:
    """Raise `ContractViolation` naming the file, the contract's missing columns and where the file's other
    columns are wrong. A column name the contract does not know is described by its position, never quoted:
    in a file delivered without its header row, the "names" are someone's email, phone and name."""
    problems = []
    counts = Counter(header)
    known = set(required) | set(STANDARD_COLUMNS) | {"customer_id"}

    def positions(names: set[str]) -> str:
        return ", ".join(str(i + 1) for i, c in enumerate(header) if c in names)

    folded = Counter(c.casefold() for c in header)  # SQL names ignore case: "Email" and "EMAIL" are one column
    duplicated = {c for c, n in counts.items() if n > 1} | {c for c in header if folded[c.casefold()] > 1}
    if duplicated:
        shown = sorted(c for c in duplicated if c in known)
        problems.append(f"columns repeated at positions {positions(duplicated)}" + (f" ({shown})" if shown else ""))
    if "" in counts:
        problems.append(f"a column without a name at position(s) {positions({''})}")
    missing = [c for c in required if c not in counts]
    if missing:
        problems.append(f"missing columns {missing}")
    unexpected = {c for c in counts if c and c not in known}
    if unexpected and contract.extra_columns == "fail":
        problems.append(
            f"{sum(counts[c] for c in unexpected)} column(s) the contract does not know, at position(s) "
            f"{positions(unexpected)} (set extra_columns: ignore to accept them)"
        )
    if problems:
        hint = (
            " The first row holds no column the contract knows: was the file delivered without its header row?"
            if header and not any(c in known for c in header)
            else ""
        )
        raise violation(
            file,
            f"does not satisfy the {contract_name} contract: {'; '.join(problems)}. The contract expects "
            f"{sorted(set(required))} (delimiter {contract.delimiter!r}).{hint}",
            contract,
            contract_name,
        )


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    file: str,
    contract: FileContract,
    contract_name: str,
    required: Sequence[str],
    wanted: Sequence[str],
    staged: Path,
    quarantine: str,
    limits: InflationLimits = DEFAULT_LIMITS,
) -> FileReport:
    """Write the file's rows, in order, to the Parquet file `staged` (columns `aa_file` and `wanted`, all
    VARCHAR, named as in the source; `staged_rows_view` numbers them) and its unreadable lines to the table
    `quarantine`. Raises `ContractViolation` for a file that cannot be used at all (empty, unreadable,
    wrong columns).

    Rows are staged on disk, compressed, rather than held in a table: every later pass reads only the
    columns it needs, and memory does not grow with the file."""
    report = FileReport(file)
    report.rows_read = _count_rows(con, path, file, contract, contract_name, required, limits)
    try:
        header = _header(con, path, contract)
    except (duckdb.Error, UnicodeDecodeError, OSError, EOFError, csv.Error) as error:
        raise _unreadable(file, error, contract, contract_name) from None
    check_columns(file, header, contract, required=required, contract_name=contract_name)
    select = ", ".join(
        [f"{literal(file)} AS aa_file"]
        + [f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" for c in wanted if c in header]
        + [f"CAST(NULL AS VARCHAR) AS {ident(c)}" for c in wanted if c not in header]
    )
    rejects = f"{quarantine}_rejects"
    try:
        source = _source(con, path, file, contract, header, quarantine, rejects)
        _copy_in_order(con, f"SELECT {select} FROM {source}", staged)
    except duckdb.Error as error:
        raise _unreadable(file, error, contract, contract_name) from None
    report.rows_accepted = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(staged)})").fetchall()[0][0]
    if contract.format == "csv":
        _quarantine_csv_rejects(con, rejects, quarantine, file, contract, report)
    elif contract.format == "jsonl":
        for reason, n in con.execute(
            f"SELECT reason, count(*) FROM {quarantine} WHERE aa_file = ? GROUP BY reason", [file]
        ).fetchall():
            report.quarantine_reasons[reason] += n
    report.rows_quarantined = sum(report.quarantine_reasons.values())
    return report


def _unreadable(file: str, error: BaseException, contract: FileContract, contract_name: str) -> ContractViolation:
    """The violation for a file its reader gave up on, saying why without quoting the file."""
    return violation(file, f"could not be read: {error_detail(error)}", contract, contract_name)


def _count_rows(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    file: str,
    contract: FileContract,
    contract_name: str,
    required: Sequence[str],
    limits: InflationLimits,
) -> int:
    """The file's rows, counted before parsing so the accounting has a total the parser cannot bend; an empty,
    inflated or unreadable file is refused here."""
    if path.stat().st_size == 0:
        raise violation(
            file, f"is empty (0 bytes), not a file with columns {sorted(set(required))}", contract, contract_name
        )
    try:
        return rows_in(con, path, contract, limits)
    except FileRejected as error:
        raise violation(file, str(error), contract, contract_name) from None
    except (duckdb.Error, OSError, EOFError) as error:  # a truncated gzip stream, a file that is not Parquet
        raise _unreadable(file, error, contract, contract_name) from None


def _source(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    file: str,
    contract: FileContract,
    header: Sequence[str],
    quarantine: str,
    rejects: str,
) -> str:
    """SQL: the file's rows as a relation, every column VARCHAR; a CSV reader sets its bad lines aside in
    `rejects` (instead of failing the file), a JSON reader puts its malformed lines in `quarantine`."""
    if contract.format == "parquet":
        return f"read_parquet({sql_path(path)})"
    if contract.format == "jsonl":
        return _jsonl_source(con, path, file, contract, header, quarantine)
    compression = "gzip" if _is_gzip(path) else "none"
    return (
        f"read_csv({sql_path(path)}, delim = {literal(contract.delimiter)}, "
        f"header = {str(contract.header).lower()}, "
        f"compression = '{compression}', encoding = {literal(contract.encoding)}, ignore_errors = true, "
        f"store_rejects = true, rejects_table = '{rejects}', rejects_scan = '{rejects}_scan', "
        f"strict_mode = true, null_padding = false, auto_detect = false, "
        f"columns = {{{', '.join(f'{literal(c)}: {chr(39)}VARCHAR{chr(39)}' for c in header)}}})"
    )


def _copy_in_order(con: duckdb.DuckDBPyConnection, query: str, staged: Path) -> None:
    """Write `query`'s rows to `staged` in the file's order, restoring the connection's setting afterwards.

    Rows keep the file's order (COPY from a single table preserves insertion order, DuckDB's "Order
    Preservation"), so a row's number is its position in the staged file: no window over the file."""
    preserved = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = true")
    try:
        con.execute(f"COPY ({query}) TO {sql_path(staged)} (FORMAT parquet)")
    finally:
        con.execute(f"SET preserve_insertion_order = {str(bool(preserved)).lower()}")


def _quarantine_csv_rejects(
    con: duckdb.DuckDBPyConnection, rejects: str, quarantine: str, file: str, contract: FileContract, report: FileReport
) -> None:
    """Move the CSV reader's rejected lines into the quarantine, one row per line with its reasons in words,
    and count them in the report, so the rows read still balance."""
    rejected = con.execute(
        f"SELECT line, string_agg(DISTINCT lower(CAST(error_type AS VARCHAR)), ', ') FROM {rejects} GROUP BY line"
    ).fetchall()
    readable = {
        "missing columns": "wrong column count (too few)",
        "too many columns": "wrong column count (too many)",
        "invalid encoding": f"undecodable text (not {contract.encoding})",
    }
    for line, reason in rejected:
        said = readable.get(reason, reason)
        con.execute(f"INSERT INTO {quarantine} VALUES (?, ?, ?)", [file, int(line), said])
        report.quarantine_reasons[said] += 1
    con.execute(f"DROP TABLE IF EXISTS {rejects}; DROP TABLE IF EXISTS {rejects}_scan")


def rows_in(
    con: duckdb.DuckDBPyConnection, path: Path, contract: FileContract, limits: InflationLimits = DEFAULT_LIMITS
) -> int:
    """The file's data rows counted without its parser (see `scan`): non-empty CSV records after the header,
    non-empty JSON lines, or the row count in a Parquet file's footer. Also checks the text as a whole."""
    if contract.format == "parquet":
        rows = con.execute(f"SELECT sum(num_rows) FROM parquet_file_metadata({sql_path(path)})").fetchall()
        return int(rows[0][0] or 0)
    if contract.format == "jsonl":
        return scan_text(path, encoding=contract.encoding, quote=None, header=False, limits=limits).records
    records = scan_text(path, encoding=contract.encoding, header=contract.header, limits=limits).records
    return max(0, records - 1) if contract.header else records


def _jsonl_source(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    file: str,
    contract: FileContract,
    header: Sequence[str],
    quarantine: str,
) -> str:
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE aa_json_lines AS SELECT row_number() OVER () AS n, line "
        f"FROM {_json_lines(path, contract)}"
    )
    con.execute(
        f"INSERT INTO {quarantine} SELECT ?, n, 'malformed JSON line' FROM aa_json_lines "
        f"WHERE trim(line) <> '' AND (NOT json_valid(line) OR json_type(line::JSON) <> 'OBJECT')",
        [file],
    )
    fields = ", ".join(f"json_extract_string(line, {literal('$.' + _json_path(c))}) AS {ident(c)}" for c in header)
    return (
        f"(SELECT {fields} FROM aa_json_lines WHERE trim(line) <> '' AND json_valid(line) "
        f"AND json_type(line::JSON) = 'OBJECT')"
    )


def _json_path(column: str) -> str:
    """A key of a JSON object as a JSON path step (not a SQL name: the path goes into SQL as a literal)."""
    return json.dumps(column, ensure_ascii=False)


def create_quarantine(con: duckdb.DuckDBPyConnection, quarantine: str) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE {quarantine} ({QUARANTINE_COLUMNS})")


def staged_rows_view(con: duckdb.DuckDBPyConnection, view: str, staged: Sequence[Path], wanted: Sequence[str]) -> None:
    """`view`: the rows `load_file` staged, from every file (none: an empty relation with the same columns)."""
    if staged:
        files = ", ".join(sql_path(p) for p in staged)
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT aa_file, file_row_number + 1 AS aa_row, "
            f"* EXCLUDE (aa_file, file_row_number) FROM read_parquet([{files}], file_row_number = true)"
        )
    else:
        columns = ", ".join(
            ["CAST(NULL AS VARCHAR) AS aa_file", "CAST(NULL AS BIGINT) AS aa_row"]
            + [f"CAST(NULL AS VARCHAR) AS {ident(c)}" for c in wanted]
        )
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {columns} WHERE FALSE")


def prehashed_cell(column: str) -> tuple[str, str]:
    """SQL for a column that must already hold a SHA-256 digest: (cell, reason)."""
    trimmed = f"trim(coalesce({ident(column)}, ''))"
    hex_ok = f"regexp_matches({trimmed}, {literal(re2(HEX64))})"
    return (
        f"CASE WHEN {hex_ok} THEN lower({trimmed}) ELSE '' END",
        f"CASE WHEN {trimmed} = '' OR {hex_ok} THEN '' ELSE 'not a SHA-256 digest' END",
    )
