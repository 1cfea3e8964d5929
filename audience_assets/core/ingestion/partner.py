"""A partner's delivery as its clean-room table: hashed match keys, a number per identity, one row per
segment attribute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

from audience_assets.core.cleanroom.tables import IDENTITIES_KEY, IDENTITY_COLUMNS, MATCH_COLUMNS, PARTNER_IDENTITY
from audience_assets.core.config import PartnerContract
from audience_assets.core.duck import DIGEST_PARQUET, ident, literal, sql_path
from audience_assets.core.identity import sql as idsql
from audience_assets.core.ingestion.passes import (
    classify_rows,
    hashed_match_columns,
    load_all,
    no_identifier,
    quarantine_verdicts,
    standard_view,
    usable_rows,
    write_quarantine,
)
from audience_assets.core.ingestion.read import ContractViolation, IngestReport, prehashed_cell
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, InflationLimits
from audience_assets.core.store import Store, StoredObject


def ingest_partner(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    files: Sequence[StoredObject],
    *,
    partner: str,
    contract: PartnerContract,
    out_table: Path,
    out_quarantine: Path,
    work_dir: Path,
    limits: InflationLimits = DEFAULT_LIMITS,
) -> tuple[IngestReport, int]:
    """The partner's clean-room table: `hashed_email, hashed_phone, hashed_madid` (NULL when unknown), the
    identity's `partner_identity` number and `segment_name, segment_value`, one row per non-empty segment
    attribute (an identity without any gets one row with NULL segment). Returns the report and the number
    of distinct identities published."""
    if not files:
        raise ContractViolation(f"no files for partner {partner!r} under landing/partners/{partner}/")
    report = load_all(
        con, store, files, contract, partner, required=contract.required_columns(), work_dir=work_dir, limits=limits
    )
    rows, keys = _partner_rows(con, contract)
    usable, why = no_identifier(keys)
    classify_rows(con, report, rows, keys, f"CASE WHEN NOT ({usable}) THEN {why} END", work_dir)
    quarantine_verdicts(con, report)
    segments = "".join(f", {ident(s)}" for s in contract.segments)
    # The usable rows' identities and segments, streamed: not held, since the usual delivery needs them once.
    ids = f"(SELECT {hashed_match_columns(keys)}{segments} FROM {usable_rows(rows)})"
    values = {s: f"nullif(trim({ident(s)}), '')" for s in contract.segments}
    identities, agreed = _build_identities(con, ids, values)
    table = _segment_rows_agreed(contract.segments) if agreed else _segment_rows_distinct(con, ids, values)
    con.execute(
        f"COPY ({table}) TO {sql_path(out_table)} ({DIGEST_PARQUET}, KV_METADATA {{{IDENTITIES_KEY}: "
        f"'{int(identities)}'}})"
    )
    write_quarantine(con, out_quarantine)
    return report, identities


def _partner_rows(con: duckdb.DuckDBPyConnection, contract: PartnerContract) -> tuple[str, list[str]]:
    """SQL: every loaded row with a payload cell per match key, and those keys. Keys the partner already
    hashed are taken as given (checked, not normalized), the others normalized and hashed here."""
    prehashed = {key: column for column, key in contract.prehashed.items()}
    plain = [k for k in contract.match_keys if k not in prehashed]
    extra = [*contract.segments, *prehashed.values()]
    idsql.install(con)
    query = idsql.meta_cells_query(
        con,
        standard_view(contract, extra),
        keys=plain,
        default_country=contract.default_country,
        keep=["aa_file", "aa_row", *extra],
    )
    pre_cols = "".join(
        f", {cell} AS {ident(key)}, {why} AS {ident(key + '__reason')}, ({cell}) <> '' AS {ident(key + '__present')}"
        for key, (cell, why) in ((k, prehashed_cell(c)) for k, c in prehashed.items())
    )
    return f"(SELECT *{pre_cols} FROM ({query}))", list(dict.fromkeys([*contract.match_keys, *prehashed]))


def _build_identities(con: duckdb.DuckDBPyConnection, ids: str, values: Mapping[str, str]) -> tuple[int, bool]:
    """Build `aa_identities`, each identity once; returns how many, and whether every identity's rows agree on
    each segment's value (then the table needs no DISTINCT)."""
    # Each identity once: whether none of its rows names a segment ("bare": it gets one NULL row) and, per
    # segment, its value when all its rows agree on it, as they do when a partner describes a person once.
    no_segment = " AND ".join(f"{v} IS NULL" for v in values.values()) or "TRUE"
    per_segment = "".join(
        f", min({v}) AS {ident('v_' + s)}, (min({v}) IS NOT DISTINCT FROM max({v}) "
        f"AND count({v}) IN (0, count(*))) AS {ident('u_' + s)}"
        for s, v in values.items()
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE aa_identities AS SELECT {IDENTITY_COLUMNS}, bool_and({no_segment}) AS aa_bare"
        f"{per_segment} FROM {ids} GROUP BY ALL"
    )
    uniform = " AND ".join(ident("u_" + s) for s in values) or "TRUE"
    identities, agreed = con.execute(
        f"SELECT count(*), coalesce(bool_and({uniform}), TRUE) FROM aa_identities"
    ).fetchall()[0]
    return identities, agreed


# an identity's number is its row in aa_identities (`rowid`): the same on each of its segment rows
_NUMBERED = f"{IDENTITY_COLUMNS}, rowid AS {PARTNER_IDENTITY}"
_NO_VALUE = "CAST(NULL AS VARCHAR) AS segment_name, CAST(NULL AS VARCHAR) AS segment_value"


def _segment_rows_agreed(segments: Sequence[str]) -> str:
    """SQL: the table's rows read from `aa_identities` alone, when each identity has one value per segment:
    its rows are distinct as they stand, no DISTINCT needed."""
    bare = f"SELECT {_NUMBERED}, {_NO_VALUE} FROM aa_identities WHERE aa_bare"
    return " UNION ALL ".join(
        [
            bare,
            *(
                f"SELECT {_NUMBERED}, {literal(s)}, {ident('v_' + s)} FROM aa_identities "
                f"WHERE {ident('v_' + s)} IS NOT NULL"
                for s in segments
            ),
        ]
    )


def _segment_rows_distinct(con: duckdb.DuckDBPyConnection, ids: str, values: Mapping[str, str]) -> str:
    """SQL: the table's rows when some identity's rows disagree on a segment, every distinct value kept.

    The rows are normalized a second time here (the usual path does it once) and held for every segment's
    unpivot. The bare identities go inside the one DISTINCT: a UNION ALL after it makes DuckDB hold its result."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE aa_ids AS SELECT * FROM {ids}")
    bare = f"SELECT {IDENTITY_COLUMNS}, {_NO_VALUE} FROM aa_identities WHERE aa_bare"
    unpivot = " UNION ALL ".join(
        f"SELECT {IDENTITY_COLUMNS}, {literal(s)} AS segment_name, {v} AS segment_value FROM aa_ids"
        for s, v in values.items()
    )
    same = " AND ".join(f"t.{c} IS NOT DISTINCT FROM i.{c}" for c in MATCH_COLUMNS.values())
    return (
        f"SELECT {', '.join(f't.{c}' for c in MATCH_COLUMNS.values())}, i.rowid AS {PARTNER_IDENTITY}, "
        f"t.segment_name, t.segment_value FROM (SELECT DISTINCT * FROM (SELECT * FROM ({unpivot}) "
        f"WHERE segment_value IS NOT NULL UNION ALL {bare})) t JOIN aa_identities i ON {same}"
    )
