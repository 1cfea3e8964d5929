"""The clean room: the match of first-party and partner data, where only what an analysis allows leaves.

`templates/` holds the analyses as SQL files; `render_*` fixes them for one partner (its table and the
keys it matches on), and that text is what becomes an AWS Clean Rooms analysis template. `rules` and
`admission` enforce analysis rules, `local` is a local collaboration with the service's API, and
`protected_query` runs a query to the end on either.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import duckdb

from audience_assets.core.duck import sql_path

MATCH_COLUMNS = {"EMAIL": "hashed_email", "PHONE": "hashed_phone", "MADID": "hashed_madid"}
FIRST_PARTY_TABLE = "first_party"   # association name of the advertiser's table
IDENTITY_COLUMNS = ", ".join(MATCH_COLUMNS.values())  # what makes one identity in a partner table (SQL)
# A number per identity of a partner table, the same on each of its segment rows: counting distinct
# identities then compares one BIGINT, not three digests. Never an output column (like the digests).
PARTNER_IDENTITY = "partner_identity"
PARTNER_COLUMNS = (*MATCH_COLUMNS.values(), PARTNER_IDENTITY, "segment_name", "segment_value")
MATCH_OUTPUT = {"customer_id": "VARCHAR", "segment_name": "VARCHAR", "segment_value": "VARCHAR"}
IDENTITIES_KEY = "partner_identities"  # Parquet key-value metadata of a partner table: its distinct identities


def first_party_columns(keys: Sequence[str]) -> tuple[str, ...]:
    """The advertiser's table: customer id and the hashed keys some partner matches on, nothing else."""
    return ("customer_id", *(MATCH_COLUMNS[k] for k in MATCH_COLUMNS if k in keys))


def _text(name: str) -> str:
    text = resources.files(__package__).joinpath("templates", f"{name}.sql").read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.startswith("--")).strip()


def _conditions(keys: Sequence[str]) -> list[str]:
    return [f"fp.{MATCH_COLUMNS[k]} = p.{MATCH_COLUMNS[k]}" for k in keys]


def render_match(partner: str, keys: Sequence[str], *, match_on: str = "any", single_join: bool = False) -> str:
    """`audience_match` for `partner`: rows match on any of `keys` (or all, with match_on="all").
    `single_join` writes "any" as one OR join, the only form a LIST rule accepts."""
    text = _text("audience_match").replace("{{partner}}", partner)
    conditions = _conditions(keys)
    if match_on == "all" or len(conditions) == 1:
        return text.replace("{{on}}", " AND ".join(conditions))
    if single_join:
        return text.replace("{{on}}", " OR ".join(conditions))
    # UNION removes duplicates itself: the branches need not each remove theirs first (a third fewer hashings)
    branch = text.replace("SELECT DISTINCT", "SELECT", 1)
    return "\nUNION\n".join(branch.replace("{{on}}", c) for c in conditions)


def render_overlap(partner: str, keys: Sequence[str], *, match_on: str = "any") -> str:
    """`overlap_count` for `partner`, matching as `render_match` does. The matched pairs carry the
    advertiser's customer id and the partner's hashed identifiers unchanged, so an aggregation threshold
    on any of them applies to the counts; identities are counted by their `partner_identity` number."""
    carried = ", ".join(f"p.{c}" for c in (*MATCH_COLUMNS.values(), PARTNER_IDENTITY))
    pair = f"SELECT fp.customer_id, {carried} FROM {FIRST_PARTY_TABLE} fp INNER JOIN {partner} p ON {{on}}"
    conditions = _conditions(keys)
    branches = [" AND ".join(conditions)] if match_on == "all" else conditions
    return _text("overlap_count").replace("{{matched_pairs}}", "\nUNION ALL\n".join(pair.format(on=c) for c in branches))


def partner_identities(con: duckdb.DuckDBPyConnection, table: Path) -> int:
    """The distinct identities in a partner table: the count its ingest stored in the file's metadata,
    else (a table written elsewhere) counted."""
    path = sql_path(table)
    stored = con.execute(f"SELECT CAST(value AS VARCHAR) FROM parquet_kv_metadata({path}) "
                         f"WHERE CAST(key AS VARCHAR) = '{IDENTITIES_KEY}'").fetchall()
    if stored:
        return int(stored[0][0])
    return con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {IDENTITY_COLUMNS} FROM read_parquet({path}))").fetchall()[0][0]
