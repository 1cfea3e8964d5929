"""Each Meta key's normalization as DuckDB SQL stages: the cell cleaned, checked and reduced to what Meta
hashes (or the reason it cannot be used), following the rules in `identity.rules`; `sql` chains the stages
into one query."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audience_assets.core.duck import literal
from audience_assets.core.identity import rules

PHONE_SEPARATORS = " ()-.+/"  # characters that only separate digit groups


def _map(table: Mapping[str, object]) -> str:
    return (
        "MAP {"
        + ", ".join(f"{literal(k)}: {v if isinstance(v, int) else literal(str(v))}" for k, v in table.items())
        + "}"
    )


def _rx(pattern: str) -> str:
    return literal(rules.re2(pattern))


@dataclass(frozen=True)
class _Stages:
    """Columns to add in order (each may use the earlier ones) and the names of the results."""

    steps: list[list[tuple[str, str]]]
    value: str  # the payload cell: hashed for hashed keys
    reason: str
    prehashed: str  # whether the input already was a SHA-256 digest
    normalized: str  # the normalized value before hashing


def _clean(p: str, v: str) -> list[list[tuple[str, str]]]:
    """Trimmed NFC text, its lower case, and whether it already is a SHA-256 digest."""
    return [
        [(f"{p}_nfc", f"nfc_normalize({v})")],
        # most values need no trimming: test the first and last character before using the expression
        [
            (
                f"{p}_t",
                f"CASE WHEN contains({literal(rules.TRIM_CHARACTERS)}, {p}_nfc[1]) OR "
                f"contains({literal(rules.TRIM_CHARACTERS)}, {p}_nfc[-1]) THEN "
                f"regexp_replace({p}_nfc, {_rx(rules.TRIM)}, '', 'g') ELSE {p}_nfc END",
            )
        ],
        # the length test first: the regular expression then only runs on 64-character values
        [
            (f"{p}_l", f"lower({p}_t)"),
            (f"{p}_hex", f"CASE WHEN strlen({p}_t) = 64 THEN regexp_matches({p}_t, {_rx(rules.HEX64)}) ELSE FALSE END"),
            (f"{p}_ctl", f"regexp_matches({p}_t, {_rx(rules.CONTROL)})"),
        ],
    ]


def _latin(expr: str) -> str:
    return f"regexp_replace(lower(strip_accents({expr})), '[^a-z]', '', 'g')"


def _result(
    p: str, cases: Sequence[tuple[str, str, str]], default: tuple[str, str], hex_passes: bool
) -> list[tuple[str, str]]:
    """Value and reason columns from (condition, value, reason) cases, after the empty/pre-hashed checks."""
    head = [(f"{p}_t = ''", "''", "''"), (f"{p}_ctl", "''", literal(rules.CONTROL_REASON))]
    if hex_passes:
        head.append((f"{p}_hex", f"{p}_l", "''"))
    all_cases = head + list(cases)
    value = "CASE " + " ".join(f"WHEN {c} THEN {v}" for c, v, _ in all_cases) + f" ELSE {default[0]} END"
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, _, r in all_cases) + f" ELSE {default[1]} END"
    return [(f"{p}_value", value), (f"{p}_reason", reason)]


def _checked_result(
    p: str, valid_when: str, cases: Sequence[tuple[str, str]], value: str, hex_passes: bool = True
) -> list[list[tuple[str, str]]]:
    """Like `_result` for row-by-row keys, where speed matters: the value needs one test, `valid_when`
    (true exactly when none of the invalid `cases` (condition, reason) holds), and the reasons are
    worked out only for the rows that turned out invalid."""
    head = [(f"{p}_t = ''", "''"), (f"{p}_ctl", "''")] + ([(f"{p}_hex", f"{p}_l")] if hex_passes else [])
    cell = "CASE " + " ".join(f"WHEN {c} THEN {v}" for c, v in head) + f" WHEN {valid_when} THEN {value} ELSE '' END"
    settled = " OR ".join([f"{p}_t = ''", *([f"{p}_hex"] if hex_passes else []), f"{p}_value <> ''"])
    reason = (
        f"CASE WHEN {p}_ctl THEN {literal(rules.CONTROL_REASON)} WHEN {settled} THEN '' "
        + " ".join(f"WHEN {c} THEN {r}" for c, r in cases)
        + " ELSE '' END"
    )
    return [[(f"{p}_value", cell)], [(f"{p}_reason", reason)]]


def _date_parts(p: str) -> list[list[tuple[str, str]]]:
    """Year, month and day of a full date in any of `rules.DATE_FORMATS` (0 when it does not parse)."""
    lc = f"{p}_l"
    fmt = (
        "CASE "
        + " ".join(
            f"WHEN regexp_matches({lc}, {_rx(pat)}) THEN {i}" for i, (pat, *_) in enumerate(rules.DATE_FORMATS, 1)
        )
        + " ELSE 0 END"
    )

    def part(index: int) -> str:
        return (
            "CASE "
            + " ".join(
                f"WHEN {p}_fmt = {i} THEN regexp_extract({lc}, {_rx(pat)}, {groups[index]})"
                for i, (pat, *groups) in enumerate(rules.DATE_FORMATS, 1)
            )
            + " ELSE '' END"
        )

    month_first = " OR ".join(f"{p}_fmt = {i}" for i, f in enumerate(rules.DATE_FORMATS, 1) if f[4]) or "FALSE"
    months = _map(rules.MONTH_NAMES)
    return [
        [(f"{p}_fmt", fmt)],
        [(f"{p}_ys", part(0)), (f"{p}_ms", part(1)), (f"{p}_ds", part(2))],
        [
            (f"{p}_y0", f"coalesce(try_cast({p}_ys AS INTEGER), 0)"),
            (
                f"{p}_m0",
                f"CASE WHEN regexp_matches({p}_ms, '^[0-9]+$') THEN CAST({p}_ms AS INTEGER) "
                f"ELSE coalesce({months}[{p}_ms], 0) END",
            ),
            (f"{p}_d0", f"coalesce(try_cast({p}_ds AS INTEGER), 0)"),
        ],
        [
            (f"{p}_swap", f"({month_first}) AND {p}_m0 > 12 AND {p}_d0 <= 12"),
        ],
        [
            (f"{p}_m1", f"CASE WHEN {p}_swap THEN {p}_d0 ELSE {p}_m0 END"),
            (f"{p}_d1", f"CASE WHEN {p}_swap THEN {p}_m0 ELSE {p}_d0 END"),
        ],
        [
            (
                f"{p}_ok",
                f"{p}_fmt > 0 AND {p}_y0 >= 1 AND {p}_m1 BETWEEN 1 AND 12 AND {p}_d1 >= 1 AND "
                f"{p}_d1 <= day(last_day(make_date({p}_y0, CASE WHEN {p}_m1 BETWEEN 1 AND 12 THEN {p}_m1 "
                "ELSE 1 END, 1)))",
            ),
        ],
    ]


def key_stages(key: str, p: str, v: str, c: str | None, calling: Mapping[str, str] | None = None) -> _Stages:
    """The SQL stages computing one Meta key from text column `v` (NULL already turned into '') and,
    for PHONE/ST/ZIP, the row's alpha-2 country column `c`. `p` prefixes every intermediate column.
    PHONE also reads the country's calling-code columns named in `calling`."""
    steps = _clean(p, v)
    lc, t = f"{p}_l", f"{p}_t"
    country = c or "NULL"
    hashed = key in rules.HASHED_KEYS
    if key == "EXTERN_ID":  # sent exactly as given, unless blank or broken (see rules.CONTROL)
        trimmed, control = f"{p}_tx", f"{p}_ctl"
        steps = [
            [(trimmed, f"regexp_replace({v}, {_rx(rules.TRIM)}, '', 'g')")],
            [(control, f"regexp_matches({trimmed}, {_rx(rules.CONTROL)})")],
            [
                (f"{p}_value", f"CASE WHEN {trimmed} = '' OR {control} THEN '' ELSE {v} END"),
                (f"{p}_reason", f"CASE WHEN {control} THEN {literal(rules.CONTROL_REASON)} ELSE '' END"),
                (f"{p}_hex", "FALSE"),
            ],
        ]
        return _Stages(steps, f"{p}_value", f"{p}_reason", f"{p}_hex", f"{p}_value")
    if key == "EMAIL":
        e = f"{p}_e"
        steps.append([(e, f"CASE WHEN ends_with({lc}, '.') THEN rtrim({lc}, '.') ELSE {lc} END")])
        # EMAIL_VALID admits exactly one @ and no whitespace, so it alone decides validity
        steps += _checked_result(
            p,
            f"regexp_matches({e}, {_rx(rules.EMAIL_VALID)})",
            [
                (f"NOT contains({e}, '@')", "'missing @'"),
                (f"strlen({e}) - strlen(replace({e}, '@', '')) > 1", "'multiple @'"),
                (f"regexp_matches({e}, {_rx(rules.WS)})", "'whitespace inside'"),
                ("TRUE", "'invalid domain'"),
            ],
            e,
        )
    elif key == "PHONE":
        assert calling is not None, "PHONE needs the country calling-code columns"
        cc, trunk, lo, hi = (calling[n] for n in ("calling_code", "trunk_prefix", "nsn_min", "nsn_max"))
        d = f"{p}_d"
        steps.append(
            [
                # Fast path without regular expressions for the usual notations (digits and common separators);
                # an extension needs an "x" (ext, x) or a "#", so only such values take the extension rule.
                (
                    f"{p}_sep",
                    functools.reduce(lambda expr, ch: f"replace({expr}, {literal(ch)}, '')", PHONE_SEPARATORS, lc),
                ),
                (f"{p}_ext", f"contains({lc}, 'x') OR contains({lc}, '#')"),
            ]
        )
        steps.append(
            [
                (
                    d,
                    f"CASE WHEN NOT {p}_ext AND regexp_full_match({p}_sep, '[0-9]*') THEN {p}_sep "
                    f"ELSE regexp_replace(CASE WHEN {p}_ext THEN regexp_replace({lc}, "
                    f"{_rx(rules.PHONE_EXTENSION)}, '') "
                    f"ELSE {lc} END, '[^0-9]', '', 'g') END",
                ),
                (
                    f"{p}_intl",
                    " OR ".join(
                        [
                            *(f"starts_with({lc}, {literal(x)})" for x in rules.PHONE_INTERNATIONAL_PREFIXES),
                            f"{country} IS NULL",
                        ]
                    ),
                ),
            ]
        )
        national_reason = f"CASE WHEN length({d}) < {lo} THEN 'too short' ELSE 'too long' END"
        steps.append(
            [
                (
                    f"{p}_n",
                    f"CASE WHEN {p}_intl THEN ltrim(CASE WHEN starts_with({lc}, '00') THEN substr({d}, 3) "
                    f"ELSE {d} END, '0') "
                    f"WHEN coalesce({cc}, '') = '' THEN ltrim({d}, '0') "
                    f"WHEN {trunk} <> '' AND starts_with({d}, {trunk}) AND length({d}) - length({trunk}) "
                    f"BETWEEN {lo} AND {hi} "
                    f"THEN {cc} || substr({d}, length({trunk}) + 1) "
                    f"WHEN starts_with({d}, {cc}) AND length({d}) - length({cc}) BETWEEN {lo} AND {hi} THEN {d} "
                    f"WHEN length({d}) BETWEEN {lo} AND {hi} THEN {cc} || {d} ELSE NULL END",
                ),
            ]
        )
        n = f"{p}_n"
        steps += _checked_result(
            p,
            f"length({n}) BETWEEN {rules.PHONE_MIN_DIGITS} AND {rules.PHONE_MAX_DIGITS}",
            [
                (f"{d} = ''", "'no digits'"),
                (f"{n} IS NULL", national_reason),
                (f"length({n}) < {rules.PHONE_MIN_DIGITS}", "'too short'"),
                (f"length({n}) > {rules.PHONE_MAX_DIGITS}", "'too long'"),
            ],
            n,
        )
    elif key == "GEN":
        steps.append([(f"{p}_g", f"{_map(rules.GENDERS)}[regexp_replace({lc}, '[^a-z]', '', 'g')]")])
        steps.append(_result(p, [(f"{p}_g IS NULL", "''", "'unrecognized'")], (f"{p}_g", "''"), hex_passes=True))
    elif key in ("DOBY", "DOBM", "DOBD"):
        steps += _date_parts(p)
        if key == "DOBY":
            steps.append(
                [
                    (
                        f"{p}_year",
                        f"CASE WHEN regexp_matches({t}, '^[0-9]{{4}}$') THEN CAST({t} AS INTEGER) "
                        f"WHEN {p}_ok THEN {p}_y0 END",
                    )
                ]
            )
            part, unparsed = f"{p}_year", f"{p}_year IS NULL"
            in_range = f"{part} BETWEEN {rules.MIN_BIRTH_YEAR} AND year(current_date)"
            formatted = f"lpad(CAST({part} AS VARCHAR), 4, '0')"
        else:
            months = _map(rules.MONTH_NAMES)
            direct = (
                (
                    f"CASE WHEN regexp_matches({lc}, '^[0-9]{{1,2}}$') THEN CAST({lc} AS INTEGER) "
                    f"ELSE {months}[regexp_replace({lc}, '\\.$', '')] END"
                )
                if key == "DOBM"
                else (
                    f"CASE WHEN regexp_matches({lc}, {_rx(rules.DAY_PART)}) "
                    f"THEN CAST(regexp_extract({lc}, {_rx(rules.DAY_PART)}, 1) AS INTEGER) END"
                )
            )
            parsed = f"{p}_m1" if key == "DOBM" else f"{p}_d1"
            steps.append([(f"{p}_part", f"coalesce({direct}, CASE WHEN {p}_ok THEN {parsed} END)")])
            part, unparsed = f"{p}_part", f"{p}_part IS NULL"
            in_range = f"{part} BETWEEN 1 AND {12 if key == 'DOBM' else 31}"
            formatted = f"lpad(CAST({part} AS VARCHAR), 2, '0')"
        steps.append(
            _result(
                p,
                [
                    (unparsed, "''", "'unparseable date'"),
                    (f"NOT ({in_range})", "''", "'out of range'"),
                ],
                (formatted, "''"),
                hex_passes=True,
            )
        )
    elif key in ("FN", "LN", "FI"):
        letters = rules.letter_class()
        steps.append([(f"{p}_name", f"regexp_replace({lc}, {literal('[^' + letters[1:])}, '', 'g')")])
        if key == "FI":
            first = f"left({p}_name, 1)"
            steps.append(
                [(f"{p}_fi", f"CASE WHEN left({_latin(first)}, 1) = '' THEN {first} ELSE left({_latin(first)}, 1) END")]
            )
            steps.append(_result(p, [(f"{p}_name = ''", "''", "'no letters'")], (f"{p}_fi", "''"), hex_passes=True))
        else:
            steps.append(_result(p, [(f"{p}_name = ''", "''", "'no letters'")], (f"{p}_name", "''"), hex_passes=True))
    elif key == "CT":
        steps.append([(f"{p}_ct", _latin(t))])
        steps.append(_result(p, [(f"{p}_ct = ''", "''", "'no latin letters'")], (f"{p}_ct", "''"), hex_passes=True))
    elif key == "ST":
        steps.append([(f"{p}_st", _latin(t))])
        steps.append([(f"{p}_code", f"{_map(rules.us_states())}[{p}_st]")])
        steps.append(
            _result(
                p,
                [
                    (f"{p}_st = ''", "''", "'no latin letters'"),
                    (f"{country} = 'us' AND {p}_code IS NULL", "''", "'unknown US state'"),
                    (f"{country} = 'us' OR ({country} IS NULL AND {p}_code IS NOT NULL)", f"{p}_code", "''"),
                ],
                (f"{p}_st", "''"),
                hex_passes=True,
            )
        )
    elif key == "ZIP":
        z = f"{p}_z"
        steps.append([(z, f"regexp_replace({lc}, {_rx(rules.WS)}, '', 'g')")])
        us, uk = _rx(rules.US_ZIP), _rx(rules.UK_POSTCODE)
        steps.append(
            _result(
                p,
                [
                    (
                        f"({country} IS NULL OR {country} = 'us') AND regexp_matches({z}, {us})",
                        f"lpad(regexp_extract({z}, {us}, 1), 5, '0')",
                        "''",
                    ),
                    (f"{country} = 'us'", "''", "'invalid US ZIP'"),
                    (
                        f"{country} = 'gb' AND regexp_matches({z}, {uk})",
                        f"regexp_extract({z}, {uk}, 1) || regexp_extract({z}, {uk}, 2)",
                        "''",
                    ),
                    (f"{country} = 'gb'", "''", "'invalid UK postcode'"),
                    (f"NOT regexp_matches({z}, '[0-9a-z]')", "''", "'no alphanumerics'"),
                ],
                (z, "''"),
                hex_passes=True,
            )
        )
    elif key == "COUNTRY":
        steps.append([(f"{p}_code", f"{_map(rules.country_lookup())}[{_latin(t)}]")])
        steps.append(
            _result(p, [(f"{p}_code IS NULL", "''", "'unknown country'")], (f"{p}_code", "''"), hex_passes=True)
        )
    elif key == "MADID":
        steps.append([(f"{p}_m", f"regexp_replace({lc}, {_rx(rules.MADID_BARE)}, '\\1-\\2-\\3-\\4-\\5')")])
        m = f"{p}_m"
        steps += _checked_result(
            p,
            f"regexp_matches({m}, {_rx(rules.MADID_UUID)}) AND {m} <> {literal(rules.MADID_ZERO)}",
            [
                (f"NOT regexp_matches({m}, {_rx(rules.MADID_UUID)})", "'not a device id'"),
                ("TRUE", "'zeroed device id'"),
            ],
            m,
        )
    elif key == "LOOKALIKE_VALUE":
        steps.append(
            _result(
                p,
                [(f"NOT regexp_matches({t}, {_rx(rules.LOOKALIKE_NUMBER)})", "''", "'not a non-negative number'")],
                (t, "''"),
                hex_passes=False,
            )
        )
    else:
        raise ValueError(f"unknown Meta key {key!r}; expected one of {', '.join(rules.META_KEYS)}")
    if hashed:
        steps.append([(f"{p}_cell", f"CASE WHEN {p}_value = '' OR {p}_hex THEN {p}_value ELSE sha256({p}_value) END")])
        return _Stages(steps, f"{p}_cell", f"{p}_reason", f"{p}_hex", f"{p}_value")
    return _Stages(steps, f"{p}_value", f"{p}_reason", f"{p}_hex", f"{p}_value")
