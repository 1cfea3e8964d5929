"""The clean room's tables: the columns of the advertiser's `first_party` table and of a partner's table,
what the match outputs, and how a partner table's identities are counted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from audience_assets.core.duck import sql_path

MATCH_COLUMNS = {"EMAIL": "hashed_email", "PHONE": "hashed_phone", "MADID": "hashed_madid"}
FIRST_PARTY_TABLE = "first_party"  # association name of the advertiser's table
IDENTITY_COLUMNS = ", ".join(MATCH_COLUMNS.values())  # what makes one identity in a partner table (SQL)
# A number per identity of a partner table, the same on each of its segment rows: counting distinct
# identities then compares one BIGINT, not three digests. Never an output column (like the digests).
PARTNER_IDENTITY = "partner_identity"
PARTNER_COLUMNS = (*MATCH_COLUMNS.values(), PARTNER_IDENTITY, "segment_name", "segment_value")
MATCH_OUTPUT = {"customer_id": "VARCHAR", "segment_name": "VARCHAR", "segment_value": "VARCHAR"}
# The type of each column the clean-room tables hold, as DuckDB writes it: what the Glue tables the stack
# creates declare (`infra.stack`), checked against the Parquet the ingestion publishes.
COLUMN_TYPES = {"customer_id": "VARCHAR", **{c: "VARCHAR" for c in MATCH_COLUMNS.values()}}
COLUMN_TYPES |= {PARTNER_IDENTITY: "BIGINT", "segment_name": "VARCHAR", "segment_value": "VARCHAR"}
IDENTITIES_KEY = "partner_identities"  # Parquet key-value metadata of a partner table: its distinct identities


def first_party_columns(keys: Sequence[str]) -> tuple[str, ...]:
    """The advertiser's table: customer id and the hashed keys some partner matches on, nothing else."""
    return ("customer_id", *(MATCH_COLUMNS[k] for k in MATCH_COLUMNS if k in keys))


def partner_identities(con: duckdb.DuckDBPyConnection, table: Path) -> int:
    """The distinct identities in a partner table: the count its ingest stored in the file's metadata,
    else (a table written elsewhere) counted."""
    path = sql_path(table)
    stored = con.execute(
        f"SELECT CAST(value AS VARCHAR) FROM parquet_kv_metadata({path}) "
        f"WHERE CAST(key AS VARCHAR) = '{IDENTITIES_KEY}'"
    ).fetchall()
    if stored:
        return int(stored[0][0])
    return con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT {IDENTITY_COLUMNS} FROM read_parquet({path}))"
    ).fetchall()[0][0]
