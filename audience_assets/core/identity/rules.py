"""The normalization rules shared by both implementations (the DuckDB SQL and the Python reference).

Everything both implementations must agree on is defined once here: the key sets, the regular
expressions (written in the common subset of Python `re` and RE2 syntax; `re2()` rewrites the few
escapes that differ), the lookup tables, and the reason vocabulary. Meta's rules come first
(developers.facebook.com, "Hashing and Normalizing Data" for multi-key audiences); where the docs are
silent, the choice is written next to the rule.
"""

from __future__ import annotations

import csv
import functools
import re
import unicodedata
from importlib import resources

# Meta's multi-key schema, in the order Meta lists them, plus LOOKALIKE_VALUE for value-based audiences.
META_KEYS: tuple[str, ...] = (
    "EXTERN_ID",
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
    "MADID",
    "COUNTRY",
    "LOOKALIKE_VALUE",
)
# Keys Meta wants SHA-256 hashed; MADID, EXTERN_ID and LOOKALIKE_VALUE travel unhashed.
HASHED_KEYS: frozenset[str] = frozenset(
    {"EMAIL", "PHONE", "GEN", "DOBY", "DOBM", "DOBD", "LN", "FN", "FI", "CT", "ST", "ZIP", "COUNTRY"}
)

# Standard input column each key is derived from (README's configuration section). PHONE, ST and ZIP also read the
# row's country.
SOURCE_COLUMN: dict[str, str] = {
    "EMAIL": "email",
    "PHONE": "phone",
    "FN": "first_name",
    "LN": "last_name",
    "FI": "first_name",
    "CT": "city",
    "ST": "state",
    "ZIP": "zip",
    "COUNTRY": "country",
    "DOBY": "dob",
    "DOBM": "dob",
    "DOBD": "dob",
    "GEN": "gender",
    "MADID": "madid",
    "EXTERN_ID": "external_id",
}
STANDARD_COLUMNS: tuple[str, ...] = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "city",
    "state",
    "zip",
    "country",
    "dob",
    "gender",
    "madid",
    "external_id",
)

# Whitespace trimmed from every value: ASCII whitespace plus the Unicode spaces CRM exports carry
# (no-break space, the U+2000 block, ideographic space, BOM, zero-width space).
_WHITESPACE = " \t\n\r\v\f\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"
# the same set spelled out, for SQL that tests single characters without a regular expression
TRIM_CHARACTERS = re.sub("(.)-(.)", lambda m: "".join(chr(c) for c in range(ord(m[1]), ord(m[2]) + 1)), _WHITESPACE)
WS = f"[{_WHITESPACE}]"
TRIM = f"^{WS}+|{WS}+$"
HEX64 = r"^[0-9a-fA-F]{64}$"
# Control characters (C0, DEL, C1) left inside a value once its ends are trimmed make it invalid ("control
# character"): NUL and its kin are no part of an email, a phone, a name or an id, and a value carrying them
# is a broken export, not a person (Meta's rules ask for trimmed text; nothing allows control characters).
CONTROL = r"[\x00-\x1f\x7f-\x9f]"
CONTROL_REASON = "control character"

# EMAIL: one @, no whitespace, a dotted domain with non-empty labels. Trailing dots are stripped first.
EMAIL_VALID = rf"^[^@{_WHITESPACE}]+@[^@.{_WHITESPACE}]+(\.[^@.{_WHITESPACE}]+)+$"

# PHONE: an extension at the end is not part of the number ("555-0100 ext. 12", "x12", "#12").
PHONE_EXTENSION = r"[ ]*(ext\.?|x|#)[ ]*[0-9]+$"
PHONE_INTERNATIONAL_PREFIXES = ("+", "00")  # a number written with its country code
PHONE_MIN_DIGITS, PHONE_MAX_DIGITS = 7, 15  # E.164 allows at most 15 digits including the country code

# Full dates of birth, tried in this order: (pattern, group of year, of month, of day, month-first).
# Month groups hold digits or an English month name. A month-first date whose first number cannot be a
# month (13-31) while the second can is read day-first: US CRM exports are month-first, others not.
DATE_FORMATS: tuple[tuple[str, int, int, int, bool], ...] = (
    (r"^([0-9]{4})[-/.]([0-9]{1,2})[-/.]([0-9]{1,2})([t ].*)?$", 1, 2, 3, False),
    (r"^([0-9]{4})([0-9]{2})([0-9]{2})$", 1, 2, 3, False),
    (r"^([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})$", 3, 1, 2, True),
    (r"^([0-9]{1,2})[.-]([0-9]{1,2})[.-]([0-9]{4})$", 3, 2, 1, False),
    (r"^([0-9]{1,2})[ -]+([a-z]+)\.?[ ,-]*([0-9]{4})$", 3, 2, 1, False),
    (r"^([a-z]+)\.?[ ]*([0-9]{1,2})(st|nd|rd|th)?,?[ ]*([0-9]{4})$", 4, 1, 2, False),
)
MONTH_NAMES: dict[str, int] = {
    "jan": 1,
    "january": 1,
    "feb": 2,
    "february": 2,
    "mar": 3,
    "march": 3,
    "apr": 4,
    "april": 4,
    "may": 5,
    "jun": 6,
    "june": 6,
    "jul": 7,
    "july": 7,
    "aug": 8,
    "august": 8,
    "sep": 9,
    "sept": 9,
    "september": 9,
    "oct": 10,
    "october": 10,
    "nov": 11,
    "november": 11,
    "dec": 12,
    "december": 12,
}
DAY_PART = r"^([0-9]{1,2})(st|nd|rd|th)?$"
MIN_BIRTH_YEAR = 1900

GENDERS: dict[str, str] = {"m": "m", "male": "m", "man": "m", "f": "f", "female": "f", "woman": "f"}

US_ZIP = r"^([0-9]{3,5})(-?[0-9]{4})?$"  # 3-4 digits: leading zeros lost by a spreadsheet, restored
UK_POSTCODE = r"^([a-z]{1,2}[0-9][a-z0-9]?)([0-9])[a-z]{2}$"  # Meta wants area/district/sector: "sw1a1"
MADID_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
MADID_BARE = r"^([0-9a-f]{8})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{12})$"
MADID_ZERO = "00000000-0000-0000-0000-000000000000"  # "limit ad tracking": identifies nobody
LOOKALIKE_NUMBER = r"^[0-9]+(\.[0-9]+)?$"


def re2(pattern: str) -> str:
    """The same pattern in RE2 syntax (DuckDB): `\\uXXXX` escapes become `\\x{XXXX}`."""
    return re.sub(r"\\u([0-9a-fA-F]{4})", r"\\x{\1}", pattern)


def _rows(name: str) -> list[dict[str, str]]:
    with resources.files(__package__).joinpath("data", name).open(encoding="utf-8") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


@functools.cache
def countries() -> dict[str, dict[str, str]]:
    """ISO alpha-2 → calling code, trunk prefix and national number length range."""
    return {row["alpha2"]: row for row in _rows("countries.csv")}


@functools.cache
def country_lookup() -> dict[str, str]:
    """Letters-only lower-case spelling (alpha-2, alpha-3, English name, alias) → alpha-2."""
    table = {alias["alias"]: alias["alpha2"] for alias in _rows("country_aliases.csv")}
    for alpha2, row in countries().items():
        table[row["alpha3"]] = alpha2
        table[alpha2] = alpha2
    return table


@functools.cache
def us_states() -> dict[str, str]:
    """Letters-only lower-case US state name, abbreviation or code → 2-letter code."""
    table = {row["name"]: row["code"] for row in _rows("us_states.csv")}
    table.update({code: code for code in set(table.values())})
    return table


LETTER_CLASS_FILE = "letter_class.txt"  # `letter_class()` precomputed: its first line names the Unicode version


@functools.cache
def letter_class() -> str:
    """A character class of Unicode letters and marks, from Python's Unicode database.

    RE2's `\\p{L}` follows a newer Unicode version than Python 3.11's `unicodedata` (14.0), so the
    SQL path uses this explicit class: both implementations then agree on every code point. Scanning
    all 1.1M code points takes a noticeable fraction of a second, so the class for the shipped Unicode
    version is read from a file, and only computed when the running Python has another version.
    """
    with resources.files(__package__).joinpath("data", LETTER_CLASS_FILE).open(encoding="ascii") as handle:
        version, letters = handle.read().split("\n")[:2]
    return letters if version == unicodedata.unidata_version else compute_letter_class()


def compute_letter_class() -> str:
    """`letter_class()` worked out from `unicodedata`, code point by code point."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x110000):
        if unicodedata.category(chr(code))[0] in "LM":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    parts = [f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges]
    return "[" + "".join(parts) + "]"
