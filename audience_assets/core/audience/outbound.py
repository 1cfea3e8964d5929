"""The last look at what leaves for Meta: every outbound cell of an upload plan in the form Meta wants.

A hashed key must be 64 lowercase hex or empty, a device id a lower-case id (or a digest a source gave), a
customer value a finite number of at least 0, and no raw column may hold something that looks like an email
address or a phone number. A plan with any such cell is not published (the `hashed_cells` check blocks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from audience_assets.core.audience.ldu import FIELDS as LDU_FIELDS
from audience_assets.core.audience.ldu import bad_cell_sql
from audience_assets.core.audience.value import FIELD as VALUE_FIELD
from audience_assets.core.duck import ident, literal, sql_path
from audience_assets.core.identity import HASHED_KEYS, rules
from audience_assets.core.identity.sql import ROW_BY_ROW_KEYS


def outbound_cell_problems(
    con: duckdb.DuckDBPyConnection, paths: Sequence[Path], keys: Sequence[str]
) -> dict[str, int]:
    """Cells that must not leave: a hashed key that is not 64 lowercase hex or empty, a device id that is not
    a lower-case id, or anything that looks like an email address or a phone number in a raw column.

    Keys whose values repeat (names, places, dates) are tested once per distinct value, weighted by how
    often it occurs: a few thousand tests instead of one per row. The rest are tested row by row."""
    keys = list(dict.fromkeys(keys))  # a key listed twice is still one column
    if not paths or not keys:
        return {}
    source = f"read_parquet([{', '.join(sql_path(p) for p in paths)}])"

    def bad(key: str, cell: str) -> str:
        if key in LDU_FIELDS:  # Limited Data Use: only the values Meta's documentation allows
            return bad_cell_sql(key, cell)
        if key == VALUE_FIELD:  # a customer value: a finite number, never negative (Meta's rule)
            return f"({cell} IS NULL OR NOT isfinite({cell}) OR {cell} < 0)"
        if key in HASHED_KEYS:
            return f"NOT regexp_full_match({cell}, '([0-9a-f]{{64}})?')"
        if key == "MADID":  # a lower-case device id as normalization writes it, or a digest a source gave
            return (
                f"NOT ({cell} = '' OR regexp_matches({cell}, {literal(rules.re2(rules.MADID_UUID))}) "
                f"OR regexp_full_match({cell}, '[0-9a-f]{{64}}'))"
            )
        # sent as given (EXTERN_ID)
        return f"contains({cell}, '@') OR regexp_matches({cell}, '^\\+?[0-9][0-9 ().-]{{8,}}$')"

    def cell(key: str) -> str:
        return ident(key) if key == VALUE_FIELD else f"coalesce({ident(key)}, '')"

    problems: dict[str, int] = {}
    per_row = [k for k in keys if k in ROW_BY_ROW_KEYS]
    if per_row:
        row = con.execute(
            f"SELECT {', '.join(f'count(*) FILTER (WHERE {bad(k, cell(k))})' for k in per_row)} FROM {source}"
        ).fetchall()[0]
        problems.update(zip(per_row, row))
    repeating = [k for k in keys if k not in ROW_BY_ROW_KEYS]
    if repeating:
        values = " UNION ALL ".join(
            f"SELECT {literal(k)} AS aa_key, {cell(k)} AS aa_cell, count(*) AS aa_n FROM {source} GROUP BY ALL"
            for k in repeating
        )
        is_bad = "CASE aa_key " + " ".join(f"WHEN {literal(k)} THEN {bad(k, 'aa_cell')}" for k in repeating) + " END"
        problems.update(
            con.execute(f"SELECT aa_key, sum(aa_n) FROM ({values}) WHERE {is_bad} GROUP BY aa_key").fetchall()
        )
    return {key: int(n) for key in keys if (n := problems.get(key))}
