"""A delivered file's raw bytes, read once before any parser sees them: is it valid text in its declared
encoding, are its header and lines of a sane size, and how many rows does it hold?

The row count is independent of DuckDB's CSV reader (which skips what it cannot read without always saying
so): records are the file's non-empty lines, a line break inside a quoted field not ending one. Ingestion
then holds rows read = accepted + quarantined against this count. Everything here is one streaming pass in
blocks of whole lines, with string operations (split, count, decode) doing the per-row work, so a file costs
time in proportion to its size and memory in proportion to one block, whatever its shape: a 50 MB file that
is one line fails at its header within the first block.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from audience_assets.core.policies import InflationLimits

BLOCK_BYTES = 8 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024


class FileRejected(ValueError):
    """The file cannot be read as a whole: the message says where (byte offset, line) and why, never what."""


DEFAULT_LIMITS = InflationLimits()


class _Inflating:
    """A gzip stream that stops with `FileRejected` once it inflates past its limits, before DuckDB ever reads it."""

    def __init__(self, stream: Any, compressed: int, limits: InflationLimits):
        self.stream, self.compressed, self.limits, self.inflated = stream, max(1, compressed), limits, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.inflated += len(data)
        limits, ratio = self.limits, self.inflated / self.compressed
        if self.inflated > limits.max_bytes or (
            self.inflated > InflationLimits.RATIO_FROM_BYTES and ratio > limits.max_ratio
        ):
            raise FileRejected(
                f"is compressed ({self.compressed:,} bytes) and inflates past {self.inflated:,} bytes ({ratio:,.0f} "
                f"times its size; at most {limits.max_ratio:g} times and {limits.max_bytes:,} bytes, "
                "AUDIENCE_MAX_INFLATION_RATIO and AUDIENCE_MAX_INFLATED_BYTES): a decompression bomb, or a file to "
                "deliver uncompressed"
            )
        return data

    def __enter__(self) -> _Inflating:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


@dataclasses.dataclass(frozen=True)
class Scan:
    records: int  # non-empty records, the header included when there is one
    longest_line: int


def _opened(path: Path, limits: InflationLimits) -> BinaryIO:
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    if not gzipped:
        return open(path, "rb")
    return _Inflating(gzip.open(path, "rb"), path.stat().st_size, limits)  # type: ignore[return-value]


def _whole_lines(chunks: Iterator[Any], newline: Any) -> Iterator[tuple[int, Any]]:
    """(offset, block) for blocks that end at a line break (the last may not); a line over the cap is
    reported before it is ever held whole."""
    carry, offset, lines = newline[:0], 0, 0
    for chunk in chunks:
        block = carry + chunk
        cut = block.rfind(newline) + 1
        if cut == 0:
            if len(block) > MAX_LINE_BYTES:
                raise FileRejected(
                    f"has a line longer than {MAX_LINE_BYTES:,} bytes (line {lines + 1:,}, from byte {offset:,})"
                )
            carry = block
            continue
        yield offset, block[:cut]
        offset += cut
        lines += block.count(newline, 0, cut)
        carry = block[cut:]
    if carry:
        yield offset, carry


def _utf8_blocks(handle: BinaryIO, validate: bool) -> Iterator[tuple[int, bytes]]:
    lines_before = 0
    for offset, block in _whole_lines(iter(lambda: handle.read(BLOCK_BYTES), b""), b"\n"):
        if validate:  # a block ends at a line break, which no multi-byte sequence contains
            try:
                block.decode("utf-8")
            except UnicodeDecodeError as error:
                line = lines_before + block.count(b"\n", 0, error.start) + 1
                raise FileRejected(
                    f"is not valid UTF-8: byte {offset + error.start:,} (line {line:,}) cannot be "
                    f"decoded ({error.reason})"
                ) from None
            lines_before += block.count(b"\n")
        yield offset, block


def _utf16_blocks(handle: BinaryIO) -> Iterator[tuple[int, str]]:
    decoder, consumed = codecs.getincrementaldecoder("utf-16")("strict"), 0

    def decoded() -> Iterator[str]:
        nonlocal consumed
        while True:
            chunk = handle.read(BLOCK_BYTES)
            try:
                yield decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                raise FileRejected(
                    f"is not valid UTF-16: byte {consumed + error.start:,} cannot be decoded ({error.reason})"
                ) from None
            if not chunk:
                return
            consumed += len(chunk)

    yield from _whole_lines(decoded(), "\n")


def _unquote_line_breaks(block: Any, in_quotes: bool, quote: Any) -> tuple[Any, bool]:
    """The block with line breaks inside quoted fields made spaces (they do not end a record), and whether
    it ends inside quotes. A doubled quote inside a field toggles twice and so changes nothing."""
    newline, cr, space = (b"\n", b"\r", b" ") if isinstance(block, bytes) else ("\n", "\r", " ")
    if quote not in block:
        return (block.replace(newline, space).replace(cr, space), True) if in_quotes else (block, False)
    parts = block.split(quote)
    ends_inside = in_quotes != (len(parts) % 2 == 0)
    inside = block[:0].join(parts[0::2] if in_quotes else parts[1::2])
    if newline not in inside and cr not in inside:
        return block, ends_inside
    for i in range(0 if in_quotes else 1, len(parts), 2):  # rare: line breaks inside quoted fields
        parts[i] = parts[i].replace(newline, space).replace(cr, space)
    return quote.join(parts), ends_inside


def scan_text(
    path: Path,
    *,
    encoding: str,
    quote: str | None = '"',
    header: bool = True,
    limits: InflationLimits = DEFAULT_LIMITS,
) -> Scan:
    """Scan a CSV file (or, with `quote=None`, JSON lines). Raises `FileRejected` for text that is not valid in
    `encoding` (the first bad byte's offset and line), a header over `MAX_HEADER_BYTES`, a line over
    `MAX_LINE_BYTES`, or a compressed file that inflates past `limits`."""
    codec = codecs.lookup(encoding).name
    records = longest = lines_before = 0
    in_quotes = False
    with _opened(path, limits) as handle:
        if codec.startswith("utf-16"):  # its line breaks are two bytes: scanned as decoded text
            blocks: Iterator[tuple[int, Any]] = _utf16_blocks(handle)
            nl, cr, q = "\n", "\r", quote
        else:  # ASCII-compatible: scanned as bytes (latin-1 needs no check: every byte is a character)
            blocks = _utf8_blocks(handle, validate=codec == "utf-8")
            nl, cr, q = b"\n", b"\r", quote.encode() if quote else None
        for offset, block in blocks:
            if offset == 0:
                block = block.removeprefix(codecs.BOM_UTF8 if isinstance(block, bytes) else "\ufeff")
            physical = block.count(nl)
            if q is not None:
                block, in_quotes = _unquote_line_breaks(block, in_quotes, q)
            lines = block.replace(cr, nl[:0]).split(nl)
            if offset == 0 and header and len(lines[0]) > MAX_HEADER_BYTES:
                raise FileRejected(
                    f"has a header row of {len(lines[0]):,} bytes; a header may hold at most {MAX_HEADER_BYTES:,}"
                )
            widest = max(map(len, lines))
            if widest > MAX_LINE_BYTES:
                at = next(i for i, line in enumerate(lines) if len(line) == widest)
                raise FileRejected(
                    f"has a line of {widest:,} bytes (line {lines_before + at + 1:,}); a line may hold "
                    f"at most {MAX_LINE_BYTES:,}"
                )
            longest = max(longest, widest)
            if q is None:  # JSON lines: a line of whitespace is blank, as the reader sees it
                records += sum(1 for line in lines if line.strip())
            else:
                records += len(lines) - lines.count(nl[:0])
                if in_quotes and lines[-1]:  # the block ends inside a quoted field: the record goes on in the next
                    records -= 1
            lines_before += physical
    return Scan(records, longest)
