"""What Meta holds on record for an audience: the rows it confirmed, read for comparison with what is wanted
(`confirmed_cells`) and brought up to date from the chunks Meta acknowledged (`update_confirmed`). A row is its
`row_id` (a digest of its identifiers) and its cells; a value stays a number (DOUBLE) on record, as it leaves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

from audience_assets.core.audience.ldu import FIELDS as LDU_FIELDS
from audience_assets.core.audience.ldu import NONE
from audience_assets.core.audience.value import FIELD as VALUE_FIELD
from audience_assets.core.duck import DIGEST_PARQUET, ident, literal, parquet_columns, sql_path


def _parquet(path: Path) -> str:
    return f"read_parquet({sql_path(path)})"


def confirmed_cells(con: duckdb.DuckDBPyConnection, confirmed: Path, keys: Sequence[str]) -> str:
    """The confirmed rows' columns for `keys`. Rows confirmed before Limited Data Use was switched on lack its
    fields: they read as no LDU (`[]`, 0, 0), which is what Meta holds for them. Any other missing key means
    the audience's keys changed: its rows cannot be compared with what Meta holds, so the plan stops."""
    held = set(parquet_columns(con, confirmed))
    missing = [k for k in keys if k not in held and k not in LDU_FIELDS]
    if missing == [VALUE_FIELD]:
        raise ValueError(
            "the audience is now value-based, and the Meta audience holding its rows is not: Meta cannot switch an "
            "audience between plain and value-based. Give it a new meta_name (a new, value-based Meta audience), "
            "or remove value:"
        )
    if missing:
        raise ValueError(
            f"the audience's keys now include {missing}, which the rows Meta holds were not sent with: the same "
            "people would be removed and added again. Keep the keys, or give the audience a new meta_name "
            "(a new Meta audience) to change them"
        )
    unset = {LDU_FIELDS[0]: NONE, LDU_FIELDS[1]: "0", LDU_FIELDS[2]: "0"}

    def cell(key: str) -> str:
        if key not in held:
            return f"{literal(unset[key])} AS {ident(key)}"
        # a value is a number: a record written while the column was text compares and leaves as one
        return f"TRY_CAST({ident(key)} AS DOUBLE) AS {ident(key)}" if key == VALUE_FIELD else ident(key)

    return ", ".join(cell(k) for k in keys)


def update_confirmed(
    con: duckdb.DuckDBPyConnection,
    *,
    keys: Sequence[str],
    confirmed: Path | None,
    acknowledged: Mapping[str, Sequence[Path]],
    out: Path,
) -> int:
    """What Meta holds after the acknowledged chunks: replace sets it, add and remove change it."""
    cells = ", ".join(ident(k) for k in keys)

    def union(paths: Sequence[Path]) -> str:
        return (
            " UNION ALL ".join(f"SELECT row_id, {cells} FROM {_parquet(p)}" for p in paths)
            or f"SELECT row_id, {cells} FROM aa_confirmed WHERE FALSE"
        )

    held_cells = confirmed_cells(con, confirmed, keys) if confirmed else ""
    base = (
        f"SELECT row_id, {held_cells} FROM {_parquet(confirmed)}"
        if confirmed
        else "SELECT "
        + ", ".join(
            [
                "CAST(NULL AS VARCHAR) AS row_id",
                *(f"CAST(NULL AS {'DOUBLE' if k == VALUE_FIELD else 'VARCHAR'}) AS {ident(k)}" for k in keys),
            ]
        )
        + " WHERE FALSE"
    )
    con.execute(f"CREATE OR REPLACE TEMP VIEW aa_confirmed AS {base}")
    if acknowledged.get("replace"):
        current = union(acknowledged["replace"])
    else:
        current = "SELECT * FROM aa_confirmed"
    added, removed = union(acknowledged.get("add", ())), union(acknowledged.get("remove", ()))
    # A row is its row_id (a digest of its cells), and no input repeats one (plans are built from distinct
    # rows), so rows are matched on row_id alone: no hashing of whole rows.
    con.execute(f"""COPY (
        WITH aa_added AS ({added}), aa_removed AS (SELECT row_id FROM ({removed}))
        SELECT * FROM ({current}) WHERE row_id NOT IN (SELECT row_id FROM aa_added)
          AND row_id NOT IN (SELECT row_id FROM aa_removed)
        UNION ALL
        SELECT * FROM aa_added WHERE row_id NOT IN (SELECT row_id FROM aa_removed)) TO {sql_path(out)}
        ({DIGEST_PARQUET})""")
    return con.execute(f"SELECT count(*) FROM {_parquet(out)}").fetchall()[0][0]
