"""A partner's match, run as protected queries: `audience_match` (and `overlap_count`) started through a
Clean Rooms client, polled to the end, and the results read back from where the service wrote them.

The client is the boto3 `cleanrooms` client in aws mode, or the local engine (`standins.local_clean_room`);
both deliver Parquet under `<results prefix><partner>/<run>/`, read back here, so the match has the same
columns and types from either. On AWS the results go to their own bucket (`AUDIENCE_RESULTS_BUCKET`): on the
Spark engine, the only one since 2025-12-17, "the Results destination in Amazon S3 can't be within the same S3
bucket as any data source" (Clean Rooms user guide, receive-results). `aws_session` says what runs on AWS
(each partner's templates found by name in the membership); the local engine builds its own session.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Protocol

from audience_assets.core import layout
from audience_assets.core.cleanroom import collaboration, protected_query
from audience_assets.core.cleanroom.protected_query import Finished, Polling, ProtectedQueryFailed
from audience_assets.core.cleanroom.rules import ANY_QUERY
from audience_assets.core.cleanroom.tables import MATCH_OUTPUT, PARTNER_COLUMNS, partner_identities
from audience_assets.core.cleanroom.templates import render_match, render_overlap
from audience_assets.core.duck import connect, parquet_columns, sql_path
from audience_assets.core.store import Store


class PartnerMatching(Protocol):
    """What the match reads of a partner's declaration (`core.config.PartnerContract` is one): the clean room
    knows nothing else of the project's configuration, which sits above it."""

    match_keys: list[str]
    clean_room: Any  # match_on, analysis_rule, member, match_template_arn, overlap_template_arn


@dataclasses.dataclass(frozen=True)
class MatchResult:
    partner: str
    rows: int  # (customer, segment attribute) pairs in the match output
    matched_customers: int  # distinct first-party customers in the match output
    matched_partner_identities: int | None  # from overlap_count; None when not run or below its threshold
    first_party_customers: int  # rows of the first-party table (the match-rate denominator)
    partner_identities: int | None  # distinct identities in the partner's table; None: a member's, not ours to read
    query: Finished  # the protected query that produced the match
    overlap_query: Finished | None


@dataclasses.dataclass(frozen=True)
class MatchSession:
    client: Any  # start_protected_query / get_protected_query / update_protected_query
    membership_id: str
    match: dict[str, Any]  # sqlParameters of the audience match
    overlap: dict[str, Any] | None  # sqlParameters of the overlap count, when it can run
    results: Store  # where the service writes results (a bucket of their own on AWS), read back here
    results_prefix: str = layout.CLEAN_ROOM_RESULTS  # under which each partner's runs write
    member: bool = False  # the partner's table is associated from its own account: we cannot count it


def template_name(template: str, partner: str) -> str:
    """The name an analysis template has in the membership: one per partner and template (the stack creates
    them from the shipped SQL, `python -m audience_assets stack`)."""
    return f"{template}-{partner}"


def membership_templates(client: Any, membership_id: str) -> dict[str, str]:
    """The membership's analysis templates: name -> ARN."""
    found: dict[str, str] = {}
    for page in client.get_paginator("list_analysis_templates").paginate(membershipIdentifier=membership_id):
        found.update({t["name"]: t["arn"] for t in page.get("analysisTemplateSummaries", [])})
    return found


def aws_session(
    client: Any, membership_id: str, contract: PartnerMatching, partner: str, results: Store, results_prefix: str
) -> MatchSession:
    """What runs for `partner` in the membership: its `audience_match` and `overlap_count` templates, set by ARN
    in partners.yaml or found by their names (`template_name`). A partner whose rule admits the advertiser's
    own SQL (`ANY_QUERY`) gets the rendered SQL as a query string; a legacy LIST rule the single-join match."""
    settings = contract.clean_room
    keys, match_on = contract.match_keys, settings.match_on
    rule = collaboration.partner_rule(settings.analysis_rule, partner)
    where = {"results": results, "results_prefix": results_prefix, "member": settings.member}
    if rule.kind != "CUSTOM":
        sql = collaboration.analyses(partner, keys, match_on, rule.kind)["audience_match"]
        return MatchSession(client, membership_id, {"queryString": sql}, None, **where)
    if ANY_QUERY in rule.allowed_analyses and not settings.match_template_arn:
        match = {"queryString": render_match(partner, keys, match_on=match_on)}
        overlap = {"queryString": render_overlap(partner, keys, match_on=match_on)}
        return MatchSession(client, membership_id, match, overlap, **where)
    known = (
        {}
        if settings.match_template_arn and settings.overlap_template_arn
        else membership_templates(client, membership_id)
    )
    match_arn = settings.match_template_arn or known.get(template_name("audience_match", partner))
    overlap_arn = settings.overlap_template_arn or known.get(template_name("overlap_count", partner))
    if match_arn is None:
        raise ProtectedQueryFailed(
            f"membership {membership_id} has no analysis template {template_name('audience_match', partner)!r} "
            f"(its templates: {', '.join(sorted(known)) or 'none'}): deploy the stack, which creates each "
            "partner's templates, or set clean_room.match_template_arn for this partner in partners.yaml",
            query_id="",
            status="NOT_STARTED",
        )
    overlap = {"analysisTemplateArn": overlap_arn} if overlap_arn else None
    return MatchSession(client, membership_id, {"analysisTemplateArn": match_arn}, overlap, **where)


def run_match(
    store: Store, partner: str, run_id: str, session: MatchSession, polling: Polling, work: Path
) -> MatchResult:
    """Run the partner's analyses, store the match at `layout.matches(partner)` and count it."""
    with contextlib.ExitStack() as stack:
        bucket, prefix = _result_target(session.results, f"{session.results_prefix}{partner}/{run_id}")

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
            parts = _result_parts(stack, session.results, match.location)
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
            first_party, identities_total = _table_sizes(con, stack, store, None if session.member else partner)
        overlap, identities = None, None
        if session.overlap:
            overlap = run(session.overlap, "overlap_count")
            with connect(work) as con:
                overlap_parts = _result_parts(stack, session.results, overlap.location)
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
    """Local copies of the Parquet parts under a result location (which must be inside the results store)."""
    root = store.uri("").rstrip("/")
    if not location.startswith(root + "/"):
        raise ProtectedQueryFailed(
            f"the clean room wrote results to {location}, outside the results location {root} it was given; "
            "nothing was read from there",
            query_id="",
            status="SUCCESS",
        )
    prefix = location[len(root) + 1 :].rstrip("/") + "/"
    return [stack.enter_context(store.local_copy(o.key)) for o in store.list(prefix) if o.key.endswith(".parquet")]


def _paths(paths: list[Path]) -> str:
    return "[" + ", ".join(sql_path(p) for p in paths) + "]"


def _table_sizes(con, stack: contextlib.ExitStack, store: Store, partner: str | None) -> tuple[int, int | None]:
    """Rows of the first-party table, and distinct identities of the partner's (None: a member's table)."""
    first_party = stack.enter_context(store.local_copy(layout.CLEAN_ROOM_FIRST_PARTY))
    customers = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(first_party)})").fetchall()[0][0]
    if partner is None:
        return int(customers), None
    table = stack.enter_context(store.local_copy(layout.partner_table(partner)))
    return int(customers), int(partner_identities(con, table))
