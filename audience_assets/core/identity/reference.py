"""The pure-Python reference implementation of Meta's identifier normalization.

It is the readable statement of the rules and the oracle the DuckDB path is tested against; other
tools may call it directly (`normalize`, `meta_value`). It handles one value at a time: bulk data goes
through `identity.sql`, which must give the same answer for every input.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import math
import re
import unicodedata
from typing import Any

from audience_assets.core.identity import rules

_TRIM = re.compile(rules.TRIM)
_HEX64 = re.compile(rules.HEX64)
_CONTROL = re.compile(rules.CONTROL)
_EMAIL = re.compile(rules.EMAIL_VALID)
_WS = re.compile(rules.WS)
_EXTENSION = re.compile(rules.PHONE_EXTENSION)
_DATES = [(re.compile(p), y, m, d, month_first) for p, y, m, d, month_first in rules.DATE_FORMATS]
_DAY = re.compile(rules.DAY_PART)
_US_ZIP = re.compile(rules.US_ZIP)
_UK_POSTCODE = re.compile(rules.UK_POSTCODE)
_MADID_UUID = re.compile(rules.MADID_UUID)
_MADID_BARE = re.compile(rules.MADID_BARE)
_LOOKALIKE = re.compile(rules.LOOKALIKE_NUMBER)


def normalize(key: str, value: Any, *, country: str | None = None) -> str:
    """The value normalized per Meta's rules for `key`, or "" when it is empty or invalid.

    `country` is the row's country in any common spelling ("US", "usa", "United States"); PHONE uses
    its calling code for national numbers, ST maps US state names, ZIP applies US and UK formats.
    """
    return normalize_with_reason(key, value, country=country)[0]


def meta_value(key: str, value: Any, *, country: str | None = None) -> str:
    """Exactly what goes into a Meta payload cell: a SHA-256 hex digest, a raw value, or ""."""
    key = key.upper()
    normalized, _, prehashed = _normalize(key, value, country)
    if key in rules.HASHED_KEYS and normalized and not prehashed:
        return sha256(normalized)
    return normalized


def sha256(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_with_reason(key: str, value: Any, *, country: str | None = None) -> tuple[str, str]:
    """(normalized value, reason); the reason is "" for a valid or empty value and names the rule
    that rejected an invalid one ("too short", "missing @", ...). Reasons never contain the value."""
    normalized, reason, _ = _normalize(key.upper(), value, country)
    return normalized, reason


def _normalize(key: str, value: Any, country: Any) -> tuple[str, str, bool]:
    """(normalized value, reason, whether the input already was a SHA-256 digest)."""
    if key not in _RULES:
        raise ValueError(f"unknown Meta key {key!r}; expected one of {', '.join(rules.META_KEYS)}")
    if key == "EXTERN_ID":  # the advertiser's own id travels exactly as given
        text = _text(value)
        if _CONTROL.search(_trim(text)):
            return "", rules.CONTROL_REASON, False
        return (text if _trim(text) else ""), "", False
    text = _trim(unicodedata.normalize("NFC", _text(value)))
    if not text:
        return "", "", False
    if _CONTROL.search(text):
        return "", rules.CONTROL_REASON, False
    if (key in rules.HASHED_KEYS or key == "MADID") and _HEX64.match(text):
        return text.lower(), "", True  # already a SHA-256 digest: never hash twice
    if key in _COUNTRY_AWARE:
        return (*_RULES[key](text, _country_code(country)), False)
    return (*_RULES[key](text), False)


def country_code(value: Any) -> str | None:
    """ISO alpha-2 (lower case) for a country in any common spelling, or None."""
    return _country_code(value)


# ----- helpers shared by the rules -----


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _trim(text: str) -> str:
    return _TRIM.sub("", text)


def _lower(text: str) -> str:
    """Per-character simple lower-casing, as DuckDB's lower() does (no final-sigma context; İ → i)."""
    return "".join("i" if ch == "\u0130" else ch.lower() for ch in text)


def _latin_letters(text: str) -> str:
    """Lower-case a-z only, after removing accents: "São Paulo" → "saopaulo"."""
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(ch for ch in decomposed if unicodedata.category(ch)[0] != "M")
    return re.sub("[^a-z]", "", _lower(stripped))


def _country_code(value: Any) -> str | None:
    letters = _latin_letters(_text(value))
    return rules.country_lookup().get(letters) if letters else None


# ----- one rule per key: (trimmed NFC text[, row country]) -> (value, reason) -----


def _email(text: str) -> tuple[str, str]:
    email = re.sub(r"\.+$", "", _lower(text))
    if "@" not in email:
        return "", "missing @"
    if email.count("@") > 1:
        return "", "multiple @"
    if _WS.search(email):
        return "", "whitespace inside"
    if not _EMAIL.match(email):
        return "", "invalid domain"
    return email, ""


def _phone(text: str, country: str | None) -> tuple[str, str]:
    """Digits only, with the country calling code. "+"/"00" numbers are international already; other
    numbers are national numbers of the row's country. With no country known, Meta's literal rule
    applies: symbols, letters and leading zeros removed."""
    lowered = _lower(text)
    digits = re.sub("[^0-9]", "", _EXTENSION.sub("", lowered))
    if not digits:
        return "", "no digits"
    if lowered.startswith(rules.PHONE_INTERNATIONAL_PREFIXES) or country is None:
        number = (digits[2:] if lowered.startswith("00") else digits).lstrip("0")
    else:
        number, reason = _with_calling_code(digits, rules.countries()[country])
        if reason:
            return "", reason
    if len(number) < rules.PHONE_MIN_DIGITS:
        return "", "too short"
    if len(number) > rules.PHONE_MAX_DIGITS:
        return "", "too long"
    return number, ""


def _with_calling_code(digits: str, info: dict[str, str]) -> tuple[str, str]:
    """A national number of the row's country, written with its calling code.

    Accepts the national form with the trunk prefix ("07911 123456" in GB), without it, or already
    prefixed with the calling code but no "+" ("447911123456"); lengths come from libphonenumber.
    """
    code, trunk = info["calling_code"], info["trunk_prefix"]
    if not code:
        return digits.lstrip("0"), ""
    low, high = int(info["nsn_min"]), int(info["nsn_max"])
    if trunk and digits.startswith(trunk) and low <= len(digits) - len(trunk) <= high:
        return code + digits[len(trunk) :], ""
    if digits.startswith(code) and low <= len(digits) - len(code) <= high:
        return digits, ""
    if low <= len(digits) <= high:
        return code + digits, ""
    return "", ("too short" if len(digits) < low else "too long")


def _gender(text: str) -> tuple[str, str]:
    gender = rules.GENDERS.get(re.sub("[^a-z]", "", _lower(text)))
    return (gender, "") if gender else ("", "unrecognized")


def _parse_date(text: str) -> tuple[int, int, int] | None:
    lowered = _lower(text)
    for pattern, y, m, d, month_first in _DATES:
        found = pattern.match(lowered)
        if not found:
            continue
        month_text = found.group(m)
        month = int(month_text) if month_text.isdigit() else rules.MONTH_NAMES.get(month_text, 0)
        year, day = int(found.group(y)), int(found.group(d))
        if month_first and month > 12 and day <= 12:
            month, day = day, month
        if year >= 1 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]:
            return year, month, day
        return None
    return None


def _birth_year(text: str) -> tuple[str, str]:
    if re.match("^[0-9]{4}$", text):
        year = int(text)
    else:
        parsed = _parse_date(text)
        if parsed is None:
            return "", "unparseable date"
        year = parsed[0]
    if not rules.MIN_BIRTH_YEAR <= year <= dt.date.today().year:
        return "", "out of range"
    return f"{year:04d}", ""


def _birth_month(text: str) -> tuple[str, str]:
    lowered = _lower(text)
    if re.match("^[0-9]{1,2}$", lowered):
        month = int(lowered)
    elif re.sub(r"\.$", "", lowered) in rules.MONTH_NAMES:
        month = rules.MONTH_NAMES[re.sub(r"\.$", "", lowered)]
    else:
        parsed = _parse_date(text)
        if parsed is None:
            return "", "unparseable date"
        month = parsed[1]
    return (f"{month:02d}", "") if 1 <= month <= 12 else ("", "out of range")


def _birth_day(text: str) -> tuple[str, str]:
    found = _DAY.match(_lower(text))
    if found:
        day = int(found.group(1))
    else:
        parsed = _parse_date(text)
        if parsed is None:
            return "", "unparseable date"
        day = parsed[2]
    return (f"{day:02d}", "") if 1 <= day <= 31 else ("", "out of range")


def _name(text: str) -> tuple[str, str]:
    """Lower case, punctuation, digits and spaces removed, letters of every script and accents kept."""
    name = "".join(ch for ch in _lower(text) if unicodedata.category(ch)[0] in "LM")
    return (name, "") if name else ("", "no letters")


def _first_initial(text: str) -> tuple[str, str]:
    """The first letter of the normalized first name, unaccented when it is a Latin letter."""
    name, _ = _name(text)
    if not name:
        return "", "no letters"
    return (_latin_letters(name[0])[:1] or name[0]), ""


def _city(text: str) -> tuple[str, str]:
    city = _latin_letters(text)
    return (city, "") if city else ("", "no latin letters")


def _state(text: str, country: str | None) -> tuple[str, str]:
    letters = _latin_letters(text)
    if not letters:
        return "", "no latin letters"
    code = rules.us_states().get(letters)
    if country == "us":
        return (code, "") if code else ("", "unknown US state")
    if country is None and code:
        return code, ""
    return letters, ""


def _zip(text: str, country: str | None) -> tuple[str, str]:
    """Lower case without whitespace; US: the 5-digit ZIP (ZIP+4 cut, lost leading zeros restored);
    GB: Meta's area/district/sector form ("SW1A 1AA" -> "sw1a1")."""
    compact = _WS.sub("", _lower(text))
    if country in (None, "us"):
        found = _US_ZIP.match(compact)
        if found:
            return found.group(1).zfill(5), ""
        if country == "us":
            return "", "invalid US ZIP"
    if country == "gb":
        found = _UK_POSTCODE.match(compact)
        return (found.group(1) + found.group(2), "") if found else ("", "invalid UK postcode")
    return (compact, "") if re.search("[0-9a-z]", compact) else ("", "no alphanumerics")


def _country(text: str) -> tuple[str, str]:
    code = _country_code(text)
    return (code, "") if code else ("", "unknown country")


def _madid(text: str) -> tuple[str, str]:
    madid = _lower(text)
    bare = _MADID_BARE.match(madid)
    if bare:
        madid = "-".join(bare.groups())
    if not _MADID_UUID.match(madid):
        return "", "not a device id"
    if madid == rules.MADID_ZERO:
        return "", "zeroed device id"
    return madid, ""


def _lookalike_value(text: str) -> tuple[str, str]:
    return (text, "") if _LOOKALIKE.match(text) else ("", "not a non-negative number")


_RULES = {
    "EMAIL": _email,
    "PHONE": _phone,
    "GEN": _gender,
    "DOBY": _birth_year,
    "DOBM": _birth_month,
    "DOBD": _birth_day,
    "FN": _name,
    "LN": _name,
    "FI": _first_initial,
    "CT": _city,
    "ST": _state,
    "ZIP": _zip,
    "COUNTRY": _country,
    "MADID": _madid,
    "LOOKALIKE_VALUE": _lookalike_value,
    "EXTERN_ID": None,
}
_COUNTRY_AWARE = frozenset({"PHONE", "ST", "ZIP"})
