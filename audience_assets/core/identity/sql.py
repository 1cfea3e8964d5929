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

from collections.abc import Iterable, Mapping, Sequence

import duckdb

from audience_assets.core.duck import ident, literal
from audience_assets.core.identity import rules
from audience_assets.core.identity.stages import key_stages

# Keys whose values are (nearly) unique per row: a dictionary would cost a hash join and save nothing.
ROW_BY_ROW_KEYS = frozenset({"EMAIL", "PHONE", "MADID", "EXTERN_ID", "LOOKALIKE_VALUE"})
COUNTRY_AWARE = frozenset({"PHONE", "ST", "ZIP"})
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
    rows = [
        (a2, r["calling_code"], r["trunk_prefix"], int(r["nsn_min"] or 0), int(r["nsn_max"] or 0))
        for a2, r in rules.countries().items()
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE aa_countries (alpha2 VARCHAR, calling_code VARCHAR, "
        "trunk_prefix VARCHAR, nsn_min INTEGER, nsn_max INTEGER)"
    )
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
    default = literal(default_country.lower()) if default_country else "NULL"
    if country_column:
        country_join, country_cols = _build_country_dictionary(con, source, country_column, default)
    else:
        country_join, country_cols = _build_default_country(con, default)

    base_cols = [*(f"b.{ident(k)}" for k in keep), *(f"{_text('b.' + c)} AS aa_src_{c}" for c in used)]
    ctes = [f"aa_rows AS (SELECT {', '.join(base_cols)}, {country_cols} FROM {source} b {country_join})"]
    current, outputs = "aa_rows", {}
    for column, column_keys in _keys_by_source(keys, sources).items():
        if ROW_BY_ROW_KEYS.intersection(column_keys):
            stage_ctes, current, column_outputs = _row_by_row(column, column_keys, current)
        else:
            stage_ctes, current, column_outputs = _join_dictionary(con, source, column, column_keys, current)
        ctes += stage_ctes
        outputs.update(column_outputs)
    if "COUNTRY" in keys:
        outputs["COUNTRY"] = ("aa_country_cell", "coalesce(aa_country_reason, '')", "aa_country_cell <> ''")
    return "WITH " + ",\n".join(ctes) + f"\nSELECT {', '.join(_output_columns(keys, keep, outputs))} FROM {current}"


# (value, reason, present) SQL of one key's output cells, over the last CTE of the chain.
_Outputs = dict[str, tuple[str, str, str]]
# The country table's numbering columns, as the phone stages name them (see key_stages' `calling`).
_NUMBERING = "ci.calling_code AS aa_cc, ci.trunk_prefix AS aa_trunk, ci.nsn_min AS aa_lo, ci.nsn_max AS aa_hi"
_CALLING = {"calling_code": "aa_cc", "trunk_prefix": "aa_trunk", "nsn_min": "aa_lo", "nsn_max": "aa_hi"}


def _text(column: str) -> str:
    """SQL: the column as text, '' for NULL, so every stage sees a string and NULLs join like blanks."""
    return f"coalesce(CAST({column} AS VARCHAR), '')"


def _build(con: duckdb.DuckDBPyConnection, table: str, ctes: list[str], select: str) -> None:
    """Materialize a dictionary as a temporary table, so the row query joins it instead of recomputing it."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS " + ("WITH " + ",\n".join(ctes) + "\n" if ctes else "") + select
    )


def _build_country_dictionary(
    con: duckdb.DuckDBPyConnection, source: str, country_column: str, default: str
) -> tuple[str, str]:
    """Build `aa_cn_class`: the row's country and its calling-code columns, worked out once per distinct spelling.

    Returns the join that attaches it to the rows and the columns it adds."""
    cn = key_stages("COUNTRY", "aa_cn", "aa_in", None)
    ctes, last = _chain("aa_cn", f"(SELECT DISTINCT {_text(country_column)} AS aa_in FROM {source})", cn.steps)
    ctes.append(
        "aa_cn_dict AS (SELECT aa_in, "
        f"CASE WHEN {cn.prehashed} THEN {default} ELSE coalesce(nullif({cn.normalized}, ''), {default}) "
        "END AS aa_country, "
        f"CASE WHEN {cn.prehashed} THEN {cn.value} END AS aa_country_digest, {cn.reason} AS "
        f"aa_country_reason FROM {last})"
    )
    ctes.append(
        f"aa_cn_full AS (SELECT d.*, {_NUMBERING} FROM aa_cn_dict d LEFT JOIN aa_countries ci ON "
        "ci.alpha2 = d.aa_country)"
    )
    _build(
        con,
        "aa_cn_class",
        ctes,
        f"SELECT *, {country_class('aa_country')} AS aa_class, "
        f"{country_cell('aa_country', 'aa_country_digest')} AS aa_country_cell FROM aa_cn_full",
    )
    return f"LEFT JOIN aa_cn_class aa_cn ON {_text('b.' + country_column)} = aa_cn.aa_in", "aa_cn.* EXCLUDE (aa_in)"


def _build_default_country(con: duckdb.DuckDBPyConnection, default: str) -> tuple[str, str]:
    """Build `aa_cn_class` as one row, the default country, for sources without a country column.

    Returns the join that attaches it to the rows and the columns it adds."""
    _build(
        con,
        "aa_cn_class",
        [],
        f"SELECT {default} AS aa_country, NULL AS aa_country_digest, '' AS aa_country_reason, "
        f"{_NUMBERING}, {country_class(default)} AS aa_class, {country_cell(default, 'NULL')} "
        f"AS aa_country_cell FROM (SELECT 1) LEFT JOIN aa_countries ci ON ci.alpha2 = {default}",
    )
    return "CROSS JOIN aa_cn_class aa_cn", "aa_cn.*"


def _keys_by_source(keys: Sequence[str], sources: Mapping[str, str]) -> dict[str, list[str]]:
    """Source column -> the keys read from it, so a column shared by keys is scanned and joined once."""
    by_source: dict[str, list[str]] = {}
    for key in keys:
        if key != "COUNTRY":
            by_source.setdefault(sources[key], []).append(key)
    return by_source


def _row_by_row(column: str, column_keys: list[str], current: str) -> tuple[list[str], str, _Outputs]:
    """CTEs computing a high-cardinality column's keys on every row; returns (ctes, last CTE, outputs)."""
    steps: list[list[tuple[str, str]]] = []
    outputs: _Outputs = {}
    for key in column_keys:
        st = key_stages(key, f"aa_{key.lower()}", f"aa_src_{column}", "aa_country", _CALLING)
        steps += st.steps
        outputs[key] = (st.value, st.reason, f"{st.normalized} <> ''")
    ctes, last = _chain(f"aa_r_{column}", current, steps)
    return ctes, last, outputs


def _join_dictionary(
    con: duckdb.DuckDBPyConnection, source: str, column: str, column_keys: list[str], current: str
) -> tuple[list[str], str, _Outputs]:
    """Build a repeating column's dictionary (each distinct value[, country class] normalized and hashed once)
    and the CTE joining it back to the rows; returns ([that CTE], its name, outputs)."""
    with_country = any(k in COUNTRY_AWARE for k in column_keys)
    dictionary = _build_column_dictionary(con, source, column, column_keys, with_country)
    on = f"j.aa_src_{column} = d.aa_in" + (" AND j.aa_class IS NOT DISTINCT FROM d.aa_c" if with_country else "")
    added = ", ".join(f"d.aa_{k.lower()}_out, d.aa_{k.lower()}_why" for k in column_keys)
    joined = f"aa_j_{column}"
    cte = f"{joined} AS (SELECT j.*, {added} FROM {current} j LEFT JOIN {dictionary} d ON {on})"
    outputs = {k: (f"aa_{k.lower()}_out", f"aa_{k.lower()}_why", f"aa_{k.lower()}_out <> ''") for k in column_keys}
    return [cte], joined, outputs


def _distinct_values(source: str, column: str, with_country: bool) -> str:
    """SQL: the distinct values a dictionary is built over (`aa_in`, and `aa_c` when a key depends on the country)."""
    if with_country:
        # every distinct value under every country class present (at most four): far fewer pairs than
        # the distinct (value, country spelling) pairs of the rows, and no second pass over them
        return (
            f"(SELECT s.aa_in, c.aa_c FROM (SELECT DISTINCT {_text(column)} AS aa_in FROM {source}) s "
            f"CROSS JOIN (SELECT DISTINCT aa_class AS aa_c FROM aa_cn_class) c)"
        )
    return f"(SELECT DISTINCT {_text(column)} AS aa_in FROM {source})"


def _build_column_dictionary(
    con: duckdb.DuckDBPyConnection, source: str, column: str, column_keys: list[str], with_country: bool
) -> str:
    """Materialize each key's cell and reason for every distinct value, as `aa_<key>_out` and `aa_<key>_why`,
    so the rows pay a join, not the normalization; returns the dictionary's table name."""
    steps: list[list[tuple[str, str]]] = []
    selected: list[str] = []
    for key in column_keys:
        st = key_stages(key, f"aa_{key.lower()}", "aa_in", "aa_c" if with_country else None)
        steps += st.steps
        selected += [f"{st.value} AS aa_{key.lower()}_out", f"{st.reason} AS aa_{key.lower()}_why"]
    dictionary = f"aa_dict_{column}"
    dict_ctes, last = _chain(f"aa_d_{column}", _distinct_values(source, column, with_country), steps)
    _build(
        con, dictionary, dict_ctes, f"SELECT aa_in{', aa_c' if with_country else ''}, {', '.join(selected)} FROM {last}"
    )
    return dictionary


def _output_columns(keys: Sequence[str], keep: Sequence[str], outputs: _Outputs) -> list[str]:
    """The final select list: kept columns, then each key's cell, reason and presence, then the row's country."""
    select = [ident(k) for k in keep]
    for key in keys:
        value, reason, present = outputs[key]
        select += [f"{value} AS {ident(key)}", f"{reason} AS {ident(key + '__reason')}"]
        select.append(f"{present} AS {ident(key + '__present')}")
    select.append("aa_country")
    return select
