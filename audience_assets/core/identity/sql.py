"""The production path: Meta normalization and hashing as DuckDB SQL, generated from `identity.rules`.

`meta_cells_query` turns a relation of standard identifier columns into Meta payload cells (one column
per key, hashed or raw, "" when empty or invalid) plus one `<KEY>__reason` column per key and one
`<KEY>__present` (whether the cell is not empty, known without computing the digest). It is the
same logic as `identity.reference`, stage by stage, and the tests hold the two to agreement.

Work is done once per distinct value where values repeat: names, cities, states, ZIPs, genders, dates
of birth and countries are normalized and hashed over `SELECT DISTINCT` dictionaries and joined back;
only the high-cardinality keys (email, phone, device ids) are computed row by row.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import duckdb

from audience_assets.core.identity import rules

# Keys whose values are (nearly) unique per row: a dictionary would cost a hash join and save nothing.
ROW_BY_ROW_KEYS = frozenset({"EMAIL", "PHONE", "MADID", "EXTERN_ID", "LOOKALIKE_VALUE"})
COUNTRY_AWARE = frozenset({"PHONE", "ST", "ZIP"})
PHONE_SEPARATORS = " ()-.+/"  # characters that only separate digit groups
# The only countries ST and ZIP have rules of their own for (see key_stages); every other country
# behaves alike, so their dictionaries are keyed by value and this class, not by every country.
COUNTRIES_WITH_OWN_RULES = ("us", "gb")


def country_class(country: str) -> str:
    """SQL: the row's country as ST and ZIP see it: us, gb, NULL (unknown) or '~' (any other country)."""
    own = ", ".join(repr(c) for c in COUNTRIES_WITH_OWN_RULES)
    return f"CASE WHEN {country} IS NULL OR {country} IN ({own}) THEN {country} ELSE '~' END"


def country_cell(country: str, digest: str) -> str:
    """SQL: COUNTRY's payload cell: the digest a source already gave, else the hash of the row's country."""
    return f"coalesce({digest}, CASE WHEN {country} IS NULL THEN '' ELSE sha256({country}) END)"


def q(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _map(table: Mapping[str, object]) -> str:
    return "MAP {" + ", ".join(f"{q(k)}: {v if isinstance(v, int) else q(str(v))}" for k, v in table.items()) + "}"


def _rx(pattern: str) -> str:
    return q(rules.re2(pattern))


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
        [(f"{p}_t", f"CASE WHEN contains({q(rules.TRIM_CHARACTERS)}, {p}_nfc[1]) OR "
                    f"contains({q(rules.TRIM_CHARACTERS)}, {p}_nfc[-1]) THEN "
                    f"regexp_replace({p}_nfc, {_rx(rules.TRIM)}, '', 'g') ELSE {p}_nfc END")],
        # the length test first: the regular expression then only runs on 64-character values
        [(f"{p}_l", f"lower({p}_t)"),
         (f"{p}_hex", f"CASE WHEN strlen({p}_t) = 64 THEN regexp_matches({p}_t, {_rx(rules.HEX64)}) ELSE FALSE END")],
    ]


def _latin(expr: str) -> str:
    return f"regexp_replace(lower(strip_accents({expr})), '[^a-z]', '', 'g')"


def _result(p: str, cases: Sequence[tuple[str, str, str]], default: tuple[str, str], hex_passes: bool) -> list[tuple[str, str]]:
    """Value and reason columns from (condition, value, reason) cases, after the empty/pre-hashed checks."""
    head = [(f"{p}_t = ''", "''", "''")]
    if hex_passes:
        head.append((f"{p}_hex", f"{p}_l", "''"))
    all_cases = head + list(cases)
    value = "CASE " + " ".join(f"WHEN {c} THEN {v}" for c, v, _ in all_cases) + f" ELSE {default[0]} END"
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, _, r in all_cases) + f" ELSE {default[1]} END"
    return [(f"{p}_value", value), (f"{p}_reason", reason)]


def _checked_result(p: str, valid_when: str, cases: Sequence[tuple[str, str]], value: str,
                    hex_passes: bool = True) -> list[list[tuple[str, str]]]:
    """Like `_result` for row-by-row keys, where speed matters: the value needs one test, `valid_when`
    (true exactly when none of the invalid `cases` (condition, reason) holds), and the reasons are
    worked out only for the rows that turned out invalid."""
    head = [(f"{p}_t = ''", "''")] + ([(f"{p}_hex", f"{p}_l")] if hex_passes else [])
    cell = "CASE " + " ".join(f"WHEN {c} THEN {v}" for c, v in head) + f" WHEN {valid_when} THEN {value} ELSE '' END"
    settled = " OR ".join([f"{p}_t = ''", *([f"{p}_hex"] if hex_passes else []), f"{p}_value <> ''"])
    reason = f"CASE WHEN {settled} THEN '' " + " ".join(f"WHEN {c} THEN {r}" for c, r in cases) + " ELSE '' END"
    return [[(f"{p}_value", cell)], [(f"{p}_reason", reason)]]


def _date_parts(p: str) -> list[list[tuple[str, str]]]:
    """Year, month and day of a full date in any of `rules.DATE_FORMATS` (0 when it does not parse)."""
    l = f"{p}_l"
    fmt = "CASE " + " ".join(
        f"WHEN regexp_matches({l}, {_rx(pat)}) THEN {i}" for i, (pat, *_) in enumerate(rules.DATE_FORMATS, 1)
    ) + " ELSE 0 END"

    def part(index: int) -> str:
        return "CASE " + " ".join(
            f"WHEN {p}_fmt = {i} THEN regexp_extract({l}, {_rx(pat)}, {groups[index]})"
            for i, (pat, *groups) in enumerate(rules.DATE_FORMATS, 1)
        ) + " ELSE '' END"

    month_first = " OR ".join(f"{p}_fmt = {i}" for i, f in enumerate(rules.DATE_FORMATS, 1) if f[4]) or "FALSE"
    months = _map(rules.MONTH_NAMES)
    return [
        [(f"{p}_fmt", fmt)],
        [(f"{p}_ys", part(0)), (f"{p}_ms", part(1)), (f"{p}_ds", part(2))],
        [
            (f"{p}_y0", f"coalesce(try_cast({p}_ys AS INTEGER), 0)"),
            (f"{p}_m0", f"CASE WHEN regexp_matches({p}_ms, '^[0-9]+$') THEN CAST({p}_ms AS INTEGER) "
                        f"ELSE coalesce({months}[{p}_ms], 0) END"),
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
            (f"{p}_ok", f"{p}_fmt > 0 AND {p}_y0 >= 1 AND {p}_m1 BETWEEN 1 AND 12 AND {p}_d1 >= 1 AND "
                        f"{p}_d1 <= day(last_day(make_date({p}_y0, CASE WHEN {p}_m1 BETWEEN 1 AND 12 THEN {p}_m1 ELSE 1 END, 1)))"),
        ],
    ]


def key_stages(key: str, p: str, v: str, c: str | None, calling: Mapping[str, str] | None = None) -> _Stages:
    """The SQL stages computing one Meta key from text column `v` (NULL already turned into '') and,
    for PHONE/ST/ZIP, the row's alpha-2 country column `c`. `p` prefixes every intermediate column.
    PHONE also reads the country's calling-code columns named in `calling`."""
    steps = _clean(p, v)
    l, t = f"{p}_l", f"{p}_t"
    country = c or "NULL"
    hashed = key in rules.HASHED_KEYS
    if key == "EXTERN_ID":
        steps = [[(f"{p}_value", f"CASE WHEN regexp_replace({v}, {_rx(rules.TRIM)}, '', 'g') = '' THEN '' ELSE {v} END"),
                  (f"{p}_reason", "''"), (f"{p}_hex", "FALSE")]]
        return _Stages(steps, f"{p}_value", f"{p}_reason", f"{p}_hex", f"{p}_value")
    if key == "EMAIL":
        e = f"{p}_e"
        steps.append([(e, f"CASE WHEN ends_with({l}, '.') THEN rtrim({l}, '.') ELSE {l} END")])
        # EMAIL_VALID admits exactly one @ and no whitespace, so it alone decides validity
        steps += _checked_result(p, f"regexp_matches({e}, {_rx(rules.EMAIL_VALID)})", [
            (f"NOT contains({e}, '@')", "'missing @'"),
            (f"strlen({e}) - strlen(replace({e}, '@', '')) > 1", "'multiple @'"),
            (f"regexp_matches({e}, {_rx(rules.WS)})", "'whitespace inside'"),
            ("TRUE", "'invalid domain'"),
        ], e)
    elif key == "PHONE":
        assert calling is not None, "PHONE needs the country calling-code columns"
        cc, trunk, lo, hi = (calling[n] for n in ("calling_code", "trunk_prefix", "nsn_min", "nsn_max"))
        d = f"{p}_d"
        steps.append([
            # Fast path without regular expressions for the usual notations (digits and common separators);
            # an extension needs an "x" (ext, x) or a "#", so only such values take the extension rule.
            (f"{p}_sep", functools.reduce(lambda expr, ch: f"replace({expr}, {q(ch)}, '')", PHONE_SEPARATORS, l)),
            (f"{p}_ext", f"contains({l}, 'x') OR contains({l}, '#')"),
        ])
        steps.append([
            (d, f"CASE WHEN NOT {p}_ext AND regexp_full_match({p}_sep, '[0-9]*') THEN {p}_sep "
                f"ELSE regexp_replace(CASE WHEN {p}_ext THEN regexp_replace({l}, {_rx(rules.PHONE_EXTENSION)}, '') "
                f"ELSE {l} END, '[^0-9]', '', 'g') END"),
            (f"{p}_intl", " OR ".join([*(f"starts_with({l}, {q(x)})" for x in rules.PHONE_INTERNATIONAL_PREFIXES),
                                       f"{country} IS NULL"])),
        ])
        national_reason = f"CASE WHEN length({d}) < {lo} THEN 'too short' ELSE 'too long' END"
        steps.append([
            (f"{p}_n", f"CASE WHEN {p}_intl THEN ltrim(CASE WHEN starts_with({l}, '00') THEN substr({d}, 3) ELSE {d} END, '0') "
                       f"WHEN coalesce({cc}, '') = '' THEN ltrim({d}, '0') "
                       f"WHEN {trunk} <> '' AND starts_with({d}, {trunk}) AND length({d}) - length({trunk}) BETWEEN {lo} AND {hi} "
                       f"THEN {cc} || substr({d}, length({trunk}) + 1) "
                       f"WHEN starts_with({d}, {cc}) AND length({d}) - length({cc}) BETWEEN {lo} AND {hi} THEN {d} "
                       f"WHEN length({d}) BETWEEN {lo} AND {hi} THEN {cc} || {d} ELSE NULL END"),
        ])
        n = f"{p}_n"
        steps += _checked_result(p, f"length({n}) BETWEEN {rules.PHONE_MIN_DIGITS} AND {rules.PHONE_MAX_DIGITS}", [
            (f"{d} = ''", "'no digits'"),
            (f"{n} IS NULL", national_reason),
            (f"length({n}) < {rules.PHONE_MIN_DIGITS}", "'too short'"),
            (f"length({n}) > {rules.PHONE_MAX_DIGITS}", "'too long'"),
        ], n)
    elif key == "GEN":
        steps.append([(f"{p}_g", f"{_map(rules.GENDERS)}[regexp_replace({l}, '[^a-z]', '', 'g')]")])
        steps.append(_result(p, [(f"{p}_g IS NULL", "''", "'unrecognized'")], (f"{p}_g", "''"), hex_passes=True))
    elif key in ("DOBY", "DOBM", "DOBD"):
        steps += _date_parts(p)
        if key == "DOBY":
            steps.append([(f"{p}_year", f"CASE WHEN regexp_matches({t}, '^[0-9]{{4}}$') THEN CAST({t} AS INTEGER) "
                                        f"WHEN {p}_ok THEN {p}_y0 END")])
            part, unparsed = f"{p}_year", f"{p}_year IS NULL"
            in_range = f"{part} BETWEEN {rules.MIN_BIRTH_YEAR} AND year(current_date)"
            formatted = f"lpad(CAST({part} AS VARCHAR), 4, '0')"
        else:
            months = _map(rules.MONTH_NAMES)
            direct = (f"CASE WHEN regexp_matches({l}, '^[0-9]{{1,2}}$') THEN CAST({l} AS INTEGER) "
                      f"ELSE {months}[regexp_replace({l}, '\\.$', '')] END") if key == "DOBM" else (
                      f"CASE WHEN regexp_matches({l}, {_rx(rules.DAY_PART)}) "
                      f"THEN CAST(regexp_extract({l}, {_rx(rules.DAY_PART)}, 1) AS INTEGER) END")
            parsed = f"{p}_m1" if key == "DOBM" else f"{p}_d1"
            steps.append([(f"{p}_part", f"coalesce({direct}, CASE WHEN {p}_ok THEN {parsed} END)")])
            part, unparsed = f"{p}_part", f"{p}_part IS NULL"
            in_range = f"{part} BETWEEN 1 AND {12 if key == 'DOBM' else 31}"
            formatted = f"lpad(CAST({part} AS VARCHAR), 2, '0')"
        steps.append(_result(p, [
            (unparsed, "''", "'unparseable date'"),
            (f"NOT ({in_range})", "''", "'out of range'"),
        ], (formatted, "''"), hex_passes=True))
    elif key in ("FN", "LN", "FI"):
        letters = rules.letter_class()
        steps.append([(f"{p}_name", f"regexp_replace({l}, {q('[^' + letters[1:])}, '', 'g')")])
        if key == "FI":
            first = f"left({p}_name, 1)"
            steps.append([(f"{p}_fi", f"CASE WHEN left({_latin(first)}, 1) = '' THEN {first} ELSE left({_latin(first)}, 1) END")])
            steps.append(_result(p, [(f"{p}_name = ''", "''", "'no letters'")], (f"{p}_fi", "''"), hex_passes=True))
        else:
            steps.append(_result(p, [(f"{p}_name = ''", "''", "'no letters'")], (f"{p}_name", "''"), hex_passes=True))
    elif key == "CT":
        steps.append([(f"{p}_ct", _latin(t))])
        steps.append(_result(p, [(f"{p}_ct = ''", "''", "'no latin letters'")], (f"{p}_ct", "''"), hex_passes=True))
    elif key == "ST":
        steps.append([(f"{p}_st", _latin(t))])
        steps.append([(f"{p}_code", f"{_map(rules.us_states())}[{p}_st]")])
        steps.append(_result(p, [
            (f"{p}_st = ''", "''", "'no latin letters'"),
            (f"{country} = 'us' AND {p}_code IS NULL", "''", "'unknown US state'"),
            (f"{country} = 'us' OR ({country} IS NULL AND {p}_code IS NOT NULL)", f"{p}_code", "''"),
        ], (f"{p}_st", "''"), hex_passes=True))
    elif key == "ZIP":
        z = f"{p}_z"
        steps.append([(z, f"regexp_replace({l}, {_rx(rules.WS)}, '', 'g')")])
        us, uk = _rx(rules.US_ZIP), _rx(rules.UK_POSTCODE)
        steps.append(_result(p, [
            (f"({country} IS NULL OR {country} = 'us') AND regexp_matches({z}, {us})",
             f"lpad(regexp_extract({z}, {us}, 1), 5, '0')", "''"),
            (f"{country} = 'us'", "''", "'invalid US ZIP'"),
            (f"{country} = 'gb' AND regexp_matches({z}, {uk})",
             f"regexp_extract({z}, {uk}, 1) || regexp_extract({z}, {uk}, 2)", "''"),
            (f"{country} = 'gb'", "''", "'invalid UK postcode'"),
            (f"NOT regexp_matches({z}, '[0-9a-z]')", "''", "'no alphanumerics'"),
        ], (z, "''"), hex_passes=True))
    elif key == "COUNTRY":
        steps.append([(f"{p}_code", f"{_map(rules.country_lookup())}[{_latin(t)}]")])
        steps.append(_result(p, [(f"{p}_code IS NULL", "''", "'unknown country'")], (f"{p}_code", "''"), hex_passes=True))
    elif key == "MADID":
        steps.append([(f"{p}_m", f"regexp_replace({l}, {_rx(rules.MADID_BARE)}, '\\1-\\2-\\3-\\4-\\5')")])
        m = f"{p}_m"
        steps += _checked_result(p, f"regexp_matches({m}, {_rx(rules.MADID_UUID)}) AND {m} <> {q(rules.MADID_ZERO)}", [
            (f"NOT regexp_matches({m}, {_rx(rules.MADID_UUID)})", "'not a device id'"),
            ("TRUE", "'zeroed device id'"),
        ], m)
    elif key == "LOOKALIKE_VALUE":
        steps.append(_result(p, [(f"NOT regexp_matches({t}, {_rx(rules.LOOKALIKE_NUMBER)})", "''", "'not a non-negative number'")],
                             (t, "''"), hex_passes=False))
    else:
        raise ValueError(f"unknown Meta key {key!r}; expected one of {', '.join(rules.META_KEYS)}")
    if hashed:
        steps.append([(f"{p}_cell", f"CASE WHEN {p}_value = '' OR {p}_hex THEN {p}_value ELSE sha256({p}_value) END")])
        return _Stages(steps, f"{p}_cell", f"{p}_reason", f"{p}_hex", f"{p}_value")
    return _Stages(steps, f"{p}_value", f"{p}_reason", f"{p}_hex", f"{p}_value")


def _chain(name: str, source: str, steps: Iterable[list[tuple[str, str]]]) -> tuple[list[str], str]:
    """CTEs adding each stage's columns to `source`; returns (ctes, name of the last one)."""
    ctes, previous = [], source
    for i, stage in enumerate(steps):
        current = f"{name}_{i}"
        columns = ", ".join(f"{expr} AS {col}" for col, expr in stage)
        ctes.append(f"{current} AS (SELECT *, {columns} FROM {previous})")
        previous = current
    return ctes, previous


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Register the country table that phone normalization joins to (idempotent)."""
    rows = [(a2, r["calling_code"], r["trunk_prefix"], int(r["nsn_min"] or 0), int(r["nsn_max"] or 0))
            for a2, r in rules.countries().items()]
    con.execute("CREATE OR REPLACE TEMP TABLE aa_countries (alpha2 VARCHAR, calling_code VARCHAR, "
                "trunk_prefix VARCHAR, nsn_min INTEGER, nsn_max INTEGER)")
    con.executemany("INSERT INTO aa_countries VALUES (?, ?, ?, ?, ?)", rows)


def meta_cells_query(
    con: duckdb.DuckDBPyConnection,
    source: str,
    *,
    keys: Sequence[str],
    key_sources: Mapping[str, str] | None = None,
    country_column: str | None = "country",
    default_country: str | None = None,
    keep: Sequence[str] = (),
) -> str:
    """A query giving, for every row of `source`: the `keep` columns, one payload cell per key, one
    `<KEY>__reason` and `<KEY>__present` per key, and `aa_country` (the row's alpha-2 country, else `default_country`).

    `source` is a table name or a parenthesised query whose identifier columns are named as in
    `rules.SOURCE_COLUMN` (override with `key_sources`). COUNTRY's cell is the hash of `aa_country`,
    so a configured default fills blank countries. Call `install(con)` once per connection.

    The dictionaries (countries, and each repeating column) are built first, on `con`, as temporary
    tables from their own scans of `source`; the returned query then streams the rows once, joining
    them. Rows are never held in memory, only distinct values.
    """
    sources = {k: (key_sources or {}).get(k, rules.SOURCE_COLUMN.get(k, k.lower())) for k in keys if k != "COUNTRY"}
    used = sorted(set(sources.values()) | ({country_column} if country_column else set()))
    default = q(default_country.lower()) if default_country else "NULL"

    def text(column: str) -> str:
        return f"coalesce(CAST({column} AS VARCHAR), '')"

    def build(table: str, ctes: list[str], select: str) -> None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS " + ("WITH " + ",\n".join(ctes) + "\n" if ctes else "") + select)

    # The row's country and its calling-code columns, worked out once per distinct spelling.
    numbering = "ci.calling_code AS aa_cc, ci.trunk_prefix AS aa_trunk, ci.nsn_min AS aa_lo, ci.nsn_max AS aa_hi"
    if country_column:
        cn = key_stages("COUNTRY", "aa_cn", "aa_in", None)
        ctes, last = _chain("aa_cn", f"(SELECT DISTINCT {text(country_column)} AS aa_in FROM {source})", cn.steps)
        ctes.append(
            "aa_cn_dict AS (SELECT aa_in, "
            f"CASE WHEN {cn.prehashed} THEN {default} ELSE coalesce(nullif({cn.normalized}, ''), {default}) END AS aa_country, "
            f"CASE WHEN {cn.prehashed} THEN {cn.value} END AS aa_country_digest, {cn.reason} AS aa_country_reason FROM {last})")
        ctes.append(f"aa_cn_full AS (SELECT d.*, {numbering} FROM aa_cn_dict d LEFT JOIN aa_countries ci ON ci.alpha2 = d.aa_country)")
        build("aa_cn_class", ctes, f"SELECT *, {country_class('aa_country')} AS aa_class, "
                                   f"{country_cell('aa_country', 'aa_country_digest')} AS aa_country_cell FROM aa_cn_full")
        country_join = f"LEFT JOIN aa_cn_class aa_cn ON {text('b.' + country_column)} = aa_cn.aa_in"
        country_cols = "aa_cn.* EXCLUDE (aa_in)"
    else:
        build("aa_cn_class", [], f"SELECT {default} AS aa_country, NULL AS aa_country_digest, '' AS aa_country_reason, "
                                 f"{numbering}, {country_class(default)} AS aa_class, {country_cell(default, 'NULL')} "
                                 f"AS aa_country_cell FROM (SELECT 1) LEFT JOIN aa_countries ci ON ci.alpha2 = {default}")
        country_join, country_cols = "CROSS JOIN aa_cn_class aa_cn", "aa_cn.*"
    calling = {"calling_code": "aa_cc", "trunk_prefix": "aa_trunk", "nsn_min": "aa_lo", "nsn_max": "aa_hi"}

    base_cols = [*(f'b."{k}"' for k in keep), *(f"{text('b.' + c)} AS aa_src_{c}" for c in used)]
    ctes = [f"aa_rows AS (SELECT {', '.join(base_cols)}, {country_cols} FROM {source} b {country_join})"]
    by_source: dict[str, list[str]] = {}
    for key in keys:
        if key != "COUNTRY":
            by_source.setdefault(sources[key], []).append(key)
    current, outputs = "aa_rows", {}
    for column, column_keys in by_source.items():
        if ROW_BY_ROW_KEYS.intersection(column_keys):
            steps: list[list[tuple[str, str]]] = []
            for key in column_keys:
                st = key_stages(key, f"aa_{key.lower()}", f"aa_src_{column}", "aa_country", calling)
                steps += st.steps
                outputs[key] = (st.value, st.reason, f"{st.normalized} <> ''")
            stage_ctes, current = _chain(f"aa_r_{column}", current, steps)
            ctes += stage_ctes
            continue
        # A dictionary: each distinct (value[, country class]) normalized and hashed once, then joined back.
        with_country = any(k in COUNTRY_AWARE for k in column_keys)
        if with_country:
            # every distinct value under every country class present (at most four): far fewer pairs than
            # the distinct (value, country spelling) pairs of the rows, and no second pass over them
            distinct = (f"(SELECT s.aa_in, c.aa_c FROM (SELECT DISTINCT {text(column)} AS aa_in FROM {source}) s "
                        f"CROSS JOIN (SELECT DISTINCT aa_class AS aa_c FROM aa_cn_class) c)")
        else:
            distinct = f"(SELECT DISTINCT {text(column)} AS aa_in FROM {source})"
        steps, selected = [], []
        for key in column_keys:
            st = key_stages(key, f"aa_{key.lower()}", "aa_in", "aa_c" if with_country else None)
            steps += st.steps
            selected += [f"{st.value} AS aa_{key.lower()}_out", f"{st.reason} AS aa_{key.lower()}_why"]
        dictionary = f"aa_dict_{column}"
        dict_ctes, last = _chain(f"aa_d_{column}", distinct, steps)
        build(dictionary, dict_ctes, f"SELECT aa_in{', aa_c' if with_country else ''}, {', '.join(selected)} FROM {last}")
        on = f"j.aa_src_{column} = d.aa_in" + (" AND j.aa_class IS NOT DISTINCT FROM d.aa_c" if with_country else "")
        added = ", ".join(f"d.aa_{k.lower()}_out, d.aa_{k.lower()}_why" for k in column_keys)
        joined = f"aa_j_{column}"
        ctes.append(f"{joined} AS (SELECT j.*, {added} FROM {current} j LEFT JOIN {dictionary} d ON {on})")
        current = joined
        outputs.update({k: (f"aa_{k.lower()}_out", f"aa_{k.lower()}_why", f"aa_{k.lower()}_out <> ''") for k in column_keys})
    if "COUNTRY" in keys:
        outputs["COUNTRY"] = ("aa_country_cell", "coalesce(aa_country_reason, '')", "aa_country_cell <> ''")

    select = [f'"{k}"' for k in keep]
    for key in keys:
        value, reason, present = outputs[key]
        select += [f'{value} AS "{key}"', f'{reason} AS "{key}__reason"', f'{present} AS "{key}__present"']
    select.append("aa_country")
    return "WITH " + ",\n".join(ctes) + f"\nSELECT {', '.join(select)} FROM {current}"
