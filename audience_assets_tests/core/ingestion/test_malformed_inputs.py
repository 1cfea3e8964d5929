"""A corpus of malformed partner deliveries and what each must produce.

Every case ends in one of two documented outcomes: the run fails with a message that names the file and
the problem (nothing of the file is used), or the file is used and its bad rows are quarantined with a
reason. Row accounting always balances: rows read = rows accepted + rows quarantined. Nothing is dropped
silently and nothing crashes without a message.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import duckdb
import pytest

from audience_assets.core.cleanroom.tables import partner_identities
from audience_assets.core.config import PartnerContract
from audience_assets.core.ingestion.partner import ingest_partner
from audience_assets.core.ingestion.read import ContractViolation, error_detail
from audience_assets.core.store import LocalStore

HEADER = "email,phone,segment"
GOOD = ["ann@example.com,+1 555 010 0001,travel", "bob@example.com,5550100002,gaming"]


def csv_bytes(*lines: str, newline: str = "\n") -> bytes:
    return (newline.join(lines) + newline).encode("utf-8")


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def parquet_bytes(tmp: Path) -> bytes:
    path = tmp / "x.parquet"
    duckdb.execute(f"COPY (SELECT 'ann@example.com' AS email, 'travel' AS segment) TO '{path}' (FORMAT parquet)")
    return path.read_bytes()


# (name, contract overrides, file name, content (bytes or a function of tmp_path), expected)
# expected: ("fail", regex that the message must match) or ("ok", accepted, {quarantine reason: rows})
CASES = [
    (
        "missing mapped column",
        {"columns": {"E-mail": "email", "Mobile": "phone"}},
        "a.csv",
        csv_bytes("E-mail,segment", "ann@example.com,travel"),
        ("fail", r"a\.csv does not satisfy the partner_x contract: missing columns \[.Mobile.\]"),
    ),
    (
        "unexpected column",
        {},
        "a.csv",
        csv_bytes(HEADER + ",ssn", GOOD[0] + ",123"),
        ("fail", r"a\.csv.*1 column\(s\) the contract does not know, at position\(s\) 4 \(set extra_columns"),
    ),
    (
        "unexpected column ignored when the contract says so",
        {"extra_columns": "ignore"},
        "a.csv",
        csv_bytes(HEADER + ",ssn", GOOD[0] + ",123"),
        ("ok", 1, {}),
    ),
    ("wrong delimiter", {"delimiter": ";"}, "a.csv", csv_bytes(HEADER, *GOOD), ("fail", r"a\.csv.*missing")),
    (
        "duplicate columns",
        {},
        "a.csv",
        csv_bytes("email,phone,segment,email", GOOD[0] + ",x@example.com"),
        ("fail", r"a\.csv.*columns repeated at positions 1, 4 \(\['email'\]\)"),
    ),
    ("empty file", {}, "a.csv", b"", ("fail", r"a\.csv is empty")),
    ("header only", {}, "a.csv", csv_bytes(HEADER), ("ok", 0, {})),
    ("UTF-8 with BOM", {}, "a.csv", b"\xef\xbb\xbf" + csv_bytes(HEADER, *GOOD), ("ok", 2, {})),
    ("CRLF line endings", {}, "a.csv", csv_bytes(HEADER, *GOOD, newline="\r\n"), ("ok", 2, {})),
    (
        "quoted newline inside a field",
        {},
        "a.csv",
        csv_bytes(HEADER, 'ann@example.com,"+1 555\n010 0001",travel'),
        ("ok", 1, {}),
    ),
    (
        "declared Latin-1",
        {"encoding": "latin-1"},
        "a.csv",
        "email,phone,segment\nzoë@example.com,,café\n".encode("latin-1"),
        ("ok", 1, {}),
    ),
    (
        "header not valid in the declared encoding",
        {},
        "a.csv",
        "émail,phone,segment\n".encode("latin-1") + csv_bytes(GOOD[0]),
        ("fail", r"a\.csv is not valid UTF-8: byte 0 \(line 1\).*Nothing of the file is used"),
    ),
    (
        "Latin-1 bytes in a UTF-8 file: the file fails as a file, not row by row",
        {},
        "a.csv",
        csv_bytes(HEADER, GOOD[0]) + "zoë@example.com,,café\n".encode("latin-1"),
        ("fail", r"a\.csv is not valid UTF-8: byte 61 \(line 3\) cannot be decoded"),
    ),
    (
        "too many columns in a row",
        {},
        "a.csv",
        csv_bytes(HEADER, GOOD[0], "x@example.com,1,travel,extra"),
        ("ok", 1, {"wrong column count (too many)": 1}),
    ),
    (
        "too few columns in a row",
        {},
        "a.csv",
        csv_bytes(HEADER, GOOD[0], "x@example.com"),
        ("ok", 1, {"wrong column count (too few)": 1}),
    ),
    (
        "no usable identifier",
        {},
        "a.csv",
        csv_bytes(HEADER, GOOD[0], "not-an-email,12,travel"),
        ("ok", 1, {"no usable identifier (EMAIL missing @; PHONE too short)": 1}),
    ),
    ("gzip-compressed CSV", {}, "a.csv.gz", gz(csv_bytes(HEADER, *GOOD)), ("ok", 2, {})),
    (
        "truncated gzip",
        {},
        "a.csv.gz",
        gz(csv_bytes(HEADER, *GOOD * 200))[:60],
        ("fail", r"a\.csv\.gz could not be read"),
    ),
    (
        "not a Parquet file",
        {"format": "parquet"},
        "a.parquet",
        csv_bytes(HEADER, *GOOD),
        ("fail", r"a\.parquet could not be read: .*No magic bytes.*contract declares parquet \("),
    ),
    (
        "Parquet missing a column",
        {"format": "parquet", "segments": ["segment", "tier"]},
        "a.parquet",
        parquet_bytes,
        ("fail", r"a\.parquet.*missing.*tier"),
    ),
    (
        "JSON Lines with a broken line",
        {"format": "jsonl"},
        "a.jsonl",
        (json.dumps({"email": "ann@example.com", "phone": "", "segment": "travel"}) + "\n{broken\n").encode(),
        ("ok", 1, {"malformed JSON line": 1}),
    ),
    (
        "no header row, names in the contract",
        {"header": False, "column_names": ["email", "phone", "segment"]},
        "a.csv",
        csv_bytes(*GOOD, "x@example.com"),
        ("ok", 2, {"wrong column count (too few)": 1}),
    ),
    (
        "a header row that is data (no header): columns described by position, never quoted",
        {},
        "a.csv",
        csv_bytes(GOOD[0], GOOD[1]),
        (
            "fail",
            r"missing columns \['segment'\]; 3 column\(s\) the contract does not know, at position\(s\) 1, 2, "
            r"3.*delivered without its header row\?.*Nothing of the file is used\.$",
        ),
    ),
    (
        "a line longer than the cap",
        {},
        "a.csv",
        csv_bytes(HEADER, GOOD[0], "x" * 1_100_000 + "@example.com,,travel", GOOD[1]),
        ("fail", r"a\.csv has a line of 1,100,020 bytes \(line 3\); a line may hold at most 1,048,576"),
    ),
    (
        "blank lines and a line of spaces: blank lines are no rows, the spaces a quarantined one",
        {},
        "a.csv",
        csv_bytes(HEADER, "", GOOD[0], "   ", "", GOOD[1], ""),
        ("ok", 2, {"wrong column count (too few)": 1}),
    ),
    (
        "UTF-16 declared",
        {"encoding": "utf-16"},
        "a.csv",
        "email,phone,segment\nann@example.com,,travel\n".encode("utf-16"),
        ("ok", 1, {}),
    ),
]


@pytest.mark.parametrize(("name", "overrides", "file", "content", "expected"), CASES, ids=[c[0] for c in CASES])
def test_malformed_delivery(tmp_path: Path, name, overrides, file, content, expected):
    data = tmp_path / "data"
    target = data / "landing" / "partners" / "partner_x" / file
    target.parent.mkdir(parents=True)
    target.write_bytes(content(tmp_path) if callable(content) else content)
    storage = LocalStore(str(data))
    contract = PartnerContract(**{"segments": ["segment"], **overrides})
    files = list(storage.list("landing/partners/partner_x/"))
    con = duckdb.connect()
    try:

        def run():
            return ingest_partner(
                con,
                storage,
                files,
                partner="partner_x",
                contract=contract,
                out_table=tmp_path / "out.parquet",
                out_quarantine=tmp_path / "q.parquet",
                work_dir=tmp_path,
            )

        if expected[0] == "fail":
            with pytest.raises(ContractViolation, match=expected[1]):
                run()
            return
        report, identities = run()
        table = tmp_path / "out.parquet"
        counted = con.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT hashed_email, hashed_phone, hashed_madid "
            f"FROM read_parquet('{table}'))"
        ).fetchall()[0][0]
        assert partner_identities(con, table) == identities == counted  # the count stored in the file's metadata
        accepted, reasons = expected[1], expected[2]
        assert report.rows_accepted == accepted
        assert dict(report.quarantine_reasons()) == reasons
        assert report.rows_read == report.rows_accepted + report.rows_quarantined
        quarantined = con.execute(
            f"SELECT reason, count(*) FROM read_parquet('{tmp_path / 'q.parquet'}') GROUP BY 1"
        ).fetchall()
        assert dict(quarantined) == reasons
    finally:
        con.close()


def test_the_corpus_covers_at_least_fifteen_malformed_inputs():
    assert len(CASES) >= 15


def test_a_partner_table_without_the_stored_count_is_counted(tmp_path: Path):
    table = tmp_path / "elsewhere.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM (VALUES ('e1', NULL, NULL, 'a', '1'), ('e1', NULL, NULL, 'b', '2'), "
            f"(NULL, 'p1', NULL, 'a', '1')) t(hashed_email, hashed_phone, hashed_madid, segment_name, segment_value)) "
            f"TO '{table}' (FORMAT parquet)"
        )
        assert partner_identities(con, table) == 2


IDENTIFYING = re.compile(r"[^\s,;\"{}:]+@[^\s,;\"{}]+|\+?\d[\d ().-]{5,}\d")


@pytest.mark.parametrize(
    ("name", "overrides", "file", "content", "expected"),
    [c for c in CASES if c[4][0] == "fail"],
    ids=[c[0] for c in CASES if c[4][0] == "fail"],
)
def test_no_failing_input_quotes_an_identifier_in_its_error(tmp_path: Path, name, overrides, file, content, expected):
    """Every identifier planted in a failing input (the corpus's emails and phone numbers, and a planted
    person appended to each text file) stays out of the error: files are described by position, type and
    count (`read.violation`, `read.error_detail`)."""
    data = content(tmp_path) if callable(content) else content
    planted = b"zebulon.planted@example.org,+1 415 555 0199,travel\n"
    if not file.endswith((".parquet", ".gz")) and data:
        data = data + planted if overrides.get("encoding") != "utf-16" else data
    path = tmp_path / "landing" / "partners" / "partner_x" / file
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    store = LocalStore(tmp_path)
    contract = PartnerContract(**{"segments": ["segment"], **overrides})
    with duckdb.connect() as con, pytest.raises(ContractViolation) as caught:
        ingest_partner(
            con,
            store,
            list(store.list("landing/partners/partner_x/")),
            partner="partner_x",
            contract=contract,
            out_table=tmp_path / "t.parquet",
            out_quarantine=tmp_path / "q.parquet",
            work_dir=tmp_path,
        )
    text = data.decode("utf-8", errors="replace") if not file.endswith((".parquet", ".gz")) else ""
    identifiers = {m.strip() for m in IDENTIFYING.findall(text)} | {"zebulon", "415 555 0199"}
    message = str(caught.value)
    assert not [i for i in identifiers if i and i in message], message


def test_reader_errors_are_cut_where_a_quotation_starts():
    """DuckDB quotes the offending value; a value may hold a quote itself (O'Brien): nothing after the first
    quote survives, and anything shaped like an email or phone number is replaced."""
    error = ValueError("Conversion Error: Could not convert string 'Sean O'Brien, 12 Main St' to INT32\nLine 2")
    assert error_detail(error) == "Conversion Error: Could not convert string"
    assert "<value>" in error_detail(ValueError("bad row ann@example.com +1 555 010 0001"))
