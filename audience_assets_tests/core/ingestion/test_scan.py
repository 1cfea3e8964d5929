"""The raw scan of a delivered file: an independent row count (quoted line breaks, CRLF, blank lines, gzip),
whole-file encoding checks with the first bad byte's offset and line, and capped header and line sizes."""

from __future__ import annotations

import csv
import gzip
import io
import time
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audience_assets.core.ingestion import scan as scanning
from audience_assets.core.ingestion.scan import FileRejected, scan_text


def write(tmp_path: Path, data: bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def duckdb_rows(path: Path, columns: int) -> int:
    cols = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(columns))
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT count(*) FROM read_csv('{path}', header = true, auto_detect = false, "
            f"delim = ',', strict_mode = true, columns = {{{cols}}})"
        ).fetchall()[0][0]


def test_records_are_non_empty_lines_with_quoted_line_breaks_inside_one(tmp_path: Path):
    data = b'email,note\r\na@x.com,"two\r\nlines"\r\n\r\nb@x.com,"say ""hi""\n"\n\nc@x.com,plain'
    assert scan_text(write(tmp_path, data), encoding="utf-8").records == 4  # header + 3 rows, blank lines skipped
    assert scan_text(write(tmp_path, gzip.compress(data), "f.csv.gz"), encoding="utf-8").records == 4


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.text(alphabet='ab,"\n é', max_size=12), min_size=3, max_size=3), max_size=40),
    st.sampled_from(["\n", "\r\n"]),
)
def test_the_count_agrees_with_what_csv_writes_and_duckdb_reads(tmp_path_factory, rows, terminator):
    """Any rows written as CSV (quotes, delimiters and line breaks in fields; every row has its commas, so none
    is an empty line) count as written, and as DuckDB reads them; the scan never parses a field. (A carriage
    return inside a field is left out: DuckDB's strict reader refuses such a file as a whole.)"""
    text = io.StringIO()
    csv.writer(text, lineterminator=terminator).writerows([["c0", "c1", "c2"], *rows])
    path = tmp_path_factory.mktemp("csv") / "rows.csv"
    path.write_text(text.getvalue(), encoding="utf-8", newline="")
    records = scan_text(path, encoding="utf-8").records - 1  # the header
    assert records == len(rows) == duckdb_rows(path, 3)


def test_invalid_utf8_fails_the_whole_file_with_offset_and_line(tmp_path: Path):
    data = b"email,name\nanna@x.com,Anna\n" + "bob@x.com,Bj\u00f6rn\n".encode("latin-1")
    with pytest.raises(FileRejected, match=r"not valid UTF-8: byte 39 \(line 3\)") as caught:
        scan_text(write(tmp_path, data), encoding="utf-8")
    assert "Bj" not in str(caught.value) and "bob" not in str(caught.value), "never the value"
    assert scan_text(write(tmp_path, data), encoding="latin-1").records == 3  # the declared encoding reads it


def test_utf16_files_are_scanned_as_text(tmp_path: Path):
    text = 'email,note\n"a@x.com","multi\nline"\nb@x.com,x\n'
    assert scan_text(write(tmp_path, text.encode("utf-16")), encoding="utf-16").records == 3
    with pytest.raises(FileRejected, match="not valid UTF-16"):
        scan_text(write(tmp_path, text.encode("utf-16")[:-1] + b"\x00\xd8"), encoding="utf-16")


def test_a_huge_header_or_line_is_refused_quickly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(scanning, "BLOCK_BYTES", 64 * 1024)  # small blocks: the cap must hold across them
    one_line = write(tmp_path, b"a," * 3_000_000, "one_line.csv")  # 6 MB and no line break at all
    started = time.monotonic()
    with pytest.raises(FileRejected, match="a line longer than 1,048,576 bytes"):
        scan_text(one_line, encoding="utf-8")
    assert time.monotonic() - started < 30
    wide_header = write(tmp_path, b"c," * 40_000 + b"\nx\n", "wide.csv")
    with pytest.raises(FileRejected, match="header row of 80,000 bytes"):
        scan_text(wide_header, encoding="utf-8")
    giant_row = write(tmp_path, b"email\n" + b"a@x.com\n" * 10 + b"b" * 2_000_000 + b"\nc@x.com\n", "giant.csv")
    too_long = r"line (of 2,000,000 bytes \(line 12\)|longer than 1,048,576 bytes \(line 12,)"
    with pytest.raises(FileRejected, match=too_long):
        scan_text(giant_row, encoding="utf-8")


def test_a_quoted_line_break_at_a_block_boundary_is_one_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Blocks end at line breaks; when the last one of a block sits inside a quoted field, the record goes on
    in the next block and is counted once."""
    import audience_assets.core.ingestion.scan as scan

    data = b'email,note\na@x.com,"one\ntwo"\nb@x.com,plain\nc@x.com,"three\nfour\nfive"\n'
    for size in range(4, len(data) + 1):
        monkeypatch.setattr(scan, "BLOCK_BYTES", size)
        assert scan_text(write(tmp_path, data), encoding="utf-8").records == 4, size


def test_whitespace_only_json_lines_are_blank(tmp_path: Path):
    data = b'{"email": "a@x.com"}\n   \n\t\n{"email": "b@x.com"}\n'
    assert scan_text(write(tmp_path, data, "a.jsonl"), encoding="utf-8", quote=None, header=False).records == 2
