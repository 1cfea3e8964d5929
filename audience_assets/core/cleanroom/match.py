"""A partner's match, run as protected queries: `audience_match` (and `overlap_count`) started through a
Clean Rooms client, polled to the end, and the results read back through the store.

The client is the boto3 `cleanrooms` client in aws mode, or the local engine (`standins.local_clean_room`);
both deliver Parquet under `clean_room/results/<partner>/<run>/`, read back here, so the match has the same
columns and types from either. `aws_session` says what runs on AWS; the local engine builds its own session.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

from audience_assets.core import layout
from audience_assets.core.cleanroom import protected_query
from audience_assets.core.cleanroom.protected_query import Finished, Polling, ProtectedQueryFailed
from audience_assets.core.cleanroom.tables import MATCH_OUTPUT, PARTNER_COLUMNS, partner_identities
from audience_assets.core.cleanroom.templates import render_match, render_overlap
from audience_assets.core.config import PartnerContract
from audience_assets.core.duck import connect, parquet_columns, sql_path
from audience_assets.core.store import Store


@dataclasses.dataclass(frozen=True)
class MatchResult:
    partner: str
    rows: int  # (customer, segment attribute) pairs in the match output
    matched_customers: int  # distinct first-party customers in the match output
    matched_partner_identities: int | None  # from overlap_count; None when not run or below its threshold
    first_party_customers: int  # rows of the first-party table (the match-rate denominator)
    partner_identities: int  # distinct identities in the partner's table
    query: Finished  # the protected query that produced the match
    overlap_query: Finished | None


@dataclasses.dataclass(frozen=True)
class MatchSession:
    client: Any  # start_protected_query / get_protected_query / update_protected_query
    membership_id: str
    match: dict[str, Any]  # sqlParameters of the audience match
    overlap: dict[str, Any] | None  # sqlParameters of the overlap count, when it can run


def aws_session(
    client: Any, membership_id: str, contract: PartnerContract, partner: str, default_template_arn: str | None
) -> MatchSession:
    """The partner's template ARNs from partners.yaml (`clean_room.match_template_arn`, else the default);
    with no ARN, the rendered SQL goes as a query string (for rules that allow ANY_QUERY)."""
    settings = contract.clean_room
    keys, match_on = contract.match_keys, settings.match_on
    match_arn = settings.match_template_arn or default_template_arn
    match = (
        {"analysisTemplateArn": match_arn}
        if match_arn
        else {"queryString": render_match(partner, keys, match_on=match_on)}
    )
    overlap = (
        {"analysisTemplateArn": settings.overlap_template_arn}
        if settings.overlap_template_arn
        else None
        if match_arn
        else {"queryString": render_overlap(partner, keys, match_on=match_on)}
    )
    return MatchSession(client, membership_id, match, overlap)


def run_match(
    store: Store, partner: str, run_id: str, session: MatchSession, polling: Polling, work: Path
) -> MatchResult:
    """Run the partner's analyses, store the match at `layout.matches(partner)` and count it."""
    with contextlib.ExitStack() as stack:
        bucket, prefix = _result_target(store, f"{layout.clean_room_results(partner)}{run_id}")

        def run(parameters: dict[str, Any], what: str) -> Finished:
            return protected_query.run(
                session.client,
                membership_id=session.membership_id,
                sql_parameters=parameters,
                bucket=bucket,
                key_prefix=prefix,
                what=f"{what} for {partner}",
                polling=polling,
            )

        match = run(session.match, "audience_match")
        out = work / "matches.parquet"
        with connect(work) as con:
            parts = _result_parts(stack, store, match.location)
            columns = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in MATCH_OUTPUT.items())
            source = (
                f"read_parquet({_paths(parts)}, union_by_name = true)"
                if parts
                # Spark may write none
                else "(SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in MATCH_OUTPUT.items()) + " WHERE FALSE)"
            )
            con.execute(f"COPY (SELECT {columns} FROM {source}) TO {sql_path(out)} (FORMAT parquet)")
            rows, customers = con.execute(
                f"SELECT count(*), count(DISTINCT customer_id) FROM read_parquet({sql_path(out)})"
            ).fetchall()[0]
            first_party, identities_total = _table_sizes(con, stack, store, partner)
        overlap, identities = None, None
        if session.overlap:
            overlap = run(session.overlap, "overlap_count")
            with connect(work) as con:
                overlap_parts = _result_parts(stack, store, overlap.location)
                counts = (
                    con.execute(
                        f"SELECT matched_partner_identities FROM read_parquet({_paths(overlap_parts)})"
                    ).fetchall()
                    if overlap_parts
                    else []
                )
            identities = int(counts[0][0]) if counts else None  # no row: held back by a threshold
        store.upload(out, layout.matches(partner))
    return MatchResult(partner, int(rows), int(customers), identities, first_party, identities_total, match, overlap)


def partner_table(stack: contextlib.ExitStack, store: Store, partner: str) -> Path:
    """The partner's stored table, refused with the fix when it lacks a column the analyses read (a table
    published by an earlier version has no `partner_identity`): a query would fail with no usable message."""
    path = stack.enter_context(store.local_copy(layout.partner_table(partner)))
    with connect() as con:
        present = set(parquet_columns(con, path))
    missing = [c for c in PARTNER_COLUMNS if c not in present]
    if missing:
        raise ValueError(
            f"the clean-room table of {partner} ({layout.partner_table(partner)}) has no column "
            f"{', '.join(missing)}: it was published by an earlier version; materialize "
            f"partner_data[{partner}] again to republish it from the partner's delivery"
        )
    return path


def _result_target(store: Store, key: str) -> tuple[str, str]:
    """(bucket, key prefix) where the service should write results for store key `key`."""
    uri = store.uri(key)
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return bucket, prefix
    return "local-results", key


def _result_parts(stack: contextlib.ExitStack, store: Store, location: str) -> list[Path]:
    """Local copies of the Parquet parts under a result location (which must be inside the store)."""
    root = store.uri("").rstrip("/")
    if not location.startswith(root + "/"):
        raise ProtectedQueryFailed(
            f"the clean room wrote results to {location}, outside the configured store {root}; "
            "the result configuration must point at AUDIENCE_BUCKET",
            query_id="",
            status="SUCCESS",
        )
    prefix = location[len(root) + 1 :].rstrip("/") + "/"
    return [stack.enter_context(store.local_copy(o.key)) for o in store.list(prefix) if o.key.endswith(".parquet")]


def _paths(paths: list[Path]) -> str:
    return "[" + ", ".join(sql_path(p) for p in paths) + "]"


def _table_sizes(con, stack: contextlib.ExitStack, store: Store, partner: str) -> tuple[int, int]:
    first_party = stack.enter_context(store.local_copy(layout.CLEAN_ROOM_FIRST_PARTY))
    table = stack.enter_context(store.local_copy(layout.partner_table(partner)))
    customers = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(first_party)})").fetchall()[0][0]
    return int(customers), int(partner_identities(con, table))
