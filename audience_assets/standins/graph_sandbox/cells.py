"""What makes one cell of an upload valid, per key, as Meta's customer-file reference describes it: hashed keys
take a SHA-256 digest, device ids a UUID or a digest, other identifiers any non-blank value, and a value-based
audience's LOOKALIKE_VALUE "an integer or floating-point arbitrary non-negative number". Kept apart from the
request checks (`validation`): these run over every cell of uploads of millions of rows."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

HASHED_CELL_KEYS = {
    "EMAIL",
    "PHONE",
    "GEN",
    "DOBY",
    "DOBM",
    "DOBD",
    "LN",
    "FN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "COUNTRY",
    "F5FIRST",
    "F5LAST",
    "EMAIL_SHA256",
    "PHONE_SHA256",
}
VALUE_KEY = "LOOKALIKE_VALUE"
_MADID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX_BYTES = b"0123456789abcdef"


def valid_cells(key: str, column: Sequence[Any]) -> list[str]:
    """One column of a payload as `KEY=cell` where the cell is valid for its key, else "". Hashed keys need
    64 lowercase hex, device ids a UUID or a digest, other keys any non-blank text or number. A column of
    digests is checked as a whole (their lengths, then all their characters at once), not with a regular
    expression per cell: uploads run to millions of cells."""
    label = f"{key}="
    if key in HASHED_CELL_KEYS:
        given = [c for c in column if c is not None and c != ""]
        try:
            joined = "".join(given).encode()
        except (TypeError, UnicodeEncodeError):  # a cell that is not text, or not encodable text
            joined = None
        # every given cell is a digest: 64 characters long, and nothing but lowercase hex in all of them
        if joined is not None and set(map(len, given)) <= {64} and not joined.translate(None, _HEX_BYTES):
            return [label + c if c else "" for c in column]
        return [label + c if isinstance(c, str) and _HEX64.fullmatch(c) else "" for c in column]
    if key in ("MADID", "MOBILE_ADVERTISER_ID"):
        return [
            label + c if isinstance(c, str) and (_MADID.fullmatch(c) or _HEX64.fullmatch(c)) else "" for c in column
        ]
    return [f"{label}{c}" if isinstance(c, (str, int)) and str(c).strip() != "" else "" for c in column]


def valid_value(cell: Any) -> bool:
    """A LOOKALIKE_VALUE cell is a JSON number (an int or a float: never text, never a boolean, which Python's
    JSON makes a subclass of int), finite and non-negative. NaN and Infinity, which Python's JSON decoder
    accepts, are not numbers Meta takes; an integer too large for a double is not one either."""
    kind = type(cell)
    if kind is float:
        return math.isfinite(cell) and cell >= 0
    return kind is int and 0 <= cell and cell.bit_length() <= 1023
