"""The clean-room resources: run a partner's analyses as protected queries and bring the results back.

`LocalCleanRoom` answers with `LocalCollaboration` (the DuckDB engine enforcing the tables' rules) and
`AwsCleanRoom` with the boto3 `cleanrooms` client; both are driven by the same `protected_query.run`,
deliver Parquet under `clean_room/results/<partner>/<run>/`, and are read back through the storage, so
the asset sees the same columns and types from either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
from botocore.config import Config

from audience_assets import layout
from audience_assets.cleanroom import (FIRST_PARTY_TABLE, MATCH_OUTPUT, PARTNER_COLUMNS, collaboration, first_party_columns,
                                       partner_identities, protected_query, render_match, render_overlap)
from audience_assets.cleanroom.local import AnalysisTemplate, LocalCollaboration
from audience_assets.cleanroom.protected_query import Finished, Polling, ProtectedQueryFailed
from audience_assets.cleanroom.rules import ConfiguredTable
from audience_assets.config import ProjectConfig
from audience_assets.duck import connect, parquet_columns, sql_path
from audience_assets.resources.storage import Storage

__all__ = ["AwsCleanRoom", "CleanRoom", "LocalCleanRoom", "MatchResult", "ProtectedQueryFailed"]


@dataclasses.dataclass(frozen=True)
class MatchResult:
    partner: str
    rows: int                                # (customer, segment attribute) pairs in the match output
    matched_customers: int                   # distinct first-party customers in the match output
    matched_partner_identities: int | None   # from overlap_count; None when not run or below its threshold
    first_party_customers: int               # rows of the first-party table (the match-rate denominator)
    partner_identities: int                  # distinct identities in the partner's table
    query: Finished                          # the protected query that produced the match
    overlap_query: Finished | None


@dataclasses.dataclass(frozen=True)
class _Session:
    client: Any
    membership_id: str
    match: dict[str, Any]            # sqlParameters of the audience match
    overlap: dict[str, Any] | None   # sqlParameters of the overlap count, when it can run


class CleanRoom(dg.ConfigurableResource):
    """Runs `audience_match` (and `overlap_count`) for a partner and stores the match at `layout.matches`."""

    poll_first_seconds: float = 5.0
    poll_longest_seconds: float = 30.0
    query_deadline_seconds: float = 3600.0

    @property
    def engine(self) -> str:
        raise NotImplementedError

    def _session(self, stack: contextlib.ExitStack, storage: Storage, config: ProjectConfig, partner: str,
                 work: Path) -> _Session:
        raise NotImplementedError

    def match(self, storage: Storage, config: ProjectConfig, partner: str, run_id: str) -> MatchResult:
        polling = Polling(self.poll_first_seconds, self.poll_longest_seconds, self.query_deadline_seconds)
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aa-cleanroom-")))
            session = self._session(stack, storage, config, partner, work)
            bucket, prefix = _result_target(storage, f"{layout.clean_room_results(partner)}{run_id}")

            def run(parameters: dict[str, Any], what: str) -> Finished:
                return protected_query.run(session.client, membership_id=session.membership_id,
                                           sql_parameters=parameters, bucket=bucket, key_prefix=prefix,
                                           what=f"{what} for {partner}", polling=polling)

            match = run(session.match, "audience_match")
            out = work / "matches.parquet"
            with connect(work) as con:
                parts = _result_parts(stack, storage, match.location)
                columns = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in MATCH_OUTPUT.items())
                source = (f"read_parquet({_paths(parts)}, union_by_name = true)" if parts else  # Spark may write none
                          "(SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in MATCH_OUTPUT.items()) + " WHERE FALSE)")
                con.execute(f"COPY (SELECT {columns} FROM {source}) TO {sql_path(out)} (FORMAT parquet)")
                rows, customers = con.execute(f"SELECT count(*), count(DISTINCT customer_id) "
                                              f"FROM read_parquet({sql_path(out)})").fetchall()[0]
                first_party, identities_total = _table_sizes(con, stack, storage, partner)
            overlap, identities = None, None
            if session.overlap:
                overlap = run(session.overlap, "overlap_count")
                with connect(work) as con:
                    overlap_parts = _result_parts(stack, storage, overlap.location)
                    counts = con.execute(f"SELECT matched_partner_identities FROM read_parquet({_paths(overlap_parts)})"
                                         ).fetchall() if overlap_parts else []
                identities = int(counts[0][0]) if counts else None  # no row: held back by a threshold
            storage.upload(out, layout.matches(partner))
        return MatchResult(partner, int(rows), int(customers), identities, first_party, identities_total, match, overlap)


def _partner_table(stack: contextlib.ExitStack, storage: Storage, partner: str) -> Path:
    """The partner's stored table, refused with the fix when it lacks a column the analyses read (a table
    published by an earlier version has no `partner_identity`): a query would fail with no usable message."""
    path = stack.enter_context(storage.local_copy(layout.partner_table(partner)))
    with connect() as con:
        present = set(parquet_columns(con, path))
    missing = [c for c in PARTNER_COLUMNS if c not in present]
    if missing:
        raise ValueError(f"the clean-room table of {partner} ({layout.partner_table(partner)}) has no column "
                         f"{', '.join(missing)}: it was published by an earlier version; materialize "
                         f"partner_data[{partner}] again to republish it from the partner's delivery")
    return path


class LocalCleanRoom(CleanRoom):
    """The local stand-in for an AWS Clean Rooms collaboration: a DuckDB engine enforcing the tables' rules."""

    @property
    def engine(self) -> str:
        return "local engine (DuckDB)"

    poll_first_seconds: float = 0.05
    poll_longest_seconds: float = 0.5

    def _session(self, stack, storage, config, partner, work) -> _Session:
        contract = config.partners[partner]
        partner_rule = collaboration.partner_rule(contract.clean_room.analysis_rule, partner)
        first_party_rule = collaboration.first_party_rule(config.sources.first_party.clean_room.analysis_rule,
                                                          list(config.partners), config.match_keys)
        tables = [
            ConfiguredTable(FIRST_PARTY_TABLE, stack.enter_context(storage.local_copy(layout.CLEAN_ROOM_FIRST_PARTY)),
                            first_party_columns(config.match_keys), first_party_rule, collaboration.RUNNER_ACCOUNT),
            ConfiguredTable(partner, _partner_table(stack, storage, partner), PARTNER_COLUMNS, partner_rule,
                            collaboration.PARTNER_ACCOUNT)]
        texts = collaboration.analyses(partner, contract.match_keys, contract.clean_room.match_on, partner_rule.kind)
        templates = [AnalysisTemplate(collaboration.template_arn(name, partner), f"{name}-{partner}", sql)
                     for name, sql in texts.items()]

        def deliver(path: Path, key_prefix: str) -> str:
            storage.upload(path, f"{key_prefix}/{path.name}")
            return storage.uri(key_prefix) + "/"

        room = LocalCollaboration(membership_id=collaboration.MEMBERSHIP_ID, account_id=collaboration.RUNNER_ACCOUNT,
                                  tables=tables, templates=templates, work_dir=work / "engine", deliver=deliver)
        if partner_rule.kind != "CUSTOM":  # templates belong to CUSTOM rules; LIST tables take the SQL itself
            return _Session(room, collaboration.MEMBERSHIP_ID, {"queryString": texts["audience_match"]}, None)
        return _Session(room, collaboration.MEMBERSHIP_ID,
                        {"analysisTemplateArn": collaboration.template_arn("audience_match", partner)},
                        {"analysisTemplateArn": collaboration.template_arn("overlap_count", partner)})


class AwsCleanRoom(CleanRoom):
    """A membership of a real AWS Clean Rooms collaboration (`CLEANROOMS_MEMBERSHIP_ID`).

    Each partner runs the template ARNs set in partners.yaml (`clean_room.match_template_arn`, else
    `CLEANROOMS_ANALYSIS_TEMPLATE_ARN`); with no ARN, the rendered SQL is sent as a query string, which
    works where the tables' rules allow ANY_QUERY for this account. Results go to the storage bucket.
    """

    membership_id: str
    analysis_template_arn: str | None = None
    region_name: str | None = None

    @property
    def engine(self) -> str:
        return f"AWS Clean Rooms (membership {self.membership_id})"

    def client(self):
        return boto3.client("cleanrooms", region_name=self.region_name,
                            config=Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=10,
                                          read_timeout=60))

    def _session(self, stack, storage, config, partner, work) -> _Session:
        contract = config.partners[partner]
        settings = contract.clean_room
        keys, match_on = contract.match_keys, settings.match_on
        match_arn = settings.match_template_arn or self.analysis_template_arn
        match = ({"analysisTemplateArn": match_arn} if match_arn else
                 {"queryString": render_match(partner, keys, match_on=match_on)})
        overlap = ({"analysisTemplateArn": settings.overlap_template_arn} if settings.overlap_template_arn else
                   None if match_arn else {"queryString": render_overlap(partner, keys, match_on=match_on)})
        return _Session(self.client(), self.membership_id, match, overlap)


def _result_target(storage: Storage, key: str) -> tuple[str, str]:
    """(bucket, key prefix) where the service should write results for storage key `key`."""
    uri = storage.uri(key)
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return bucket, prefix
    return "local-results", key


def _result_parts(stack: contextlib.ExitStack, storage: Storage, location: str) -> list[Path]:
    """Local copies of the Parquet parts under a result location (which must be inside the storage)."""
    root = storage.uri("").rstrip("/")
    if not location.startswith(root + "/"):
        raise ProtectedQueryFailed(f"the clean room wrote results to {location}, outside the configured store {root}; "
                                   "the result configuration must point at AUDIENCE_BUCKET", query_id="", status="SUCCESS")
    prefix = location[len(root) + 1:].rstrip("/") + "/"
    return [stack.enter_context(storage.local_copy(o.key)) for o in storage.list(prefix) if o.key.endswith(".parquet")]


def _paths(paths: list[Path]) -> str:
    return "[" + ", ".join(sql_path(p) for p in paths) + "]"


def _table_sizes(con, stack: contextlib.ExitStack, storage: Storage, partner: str) -> tuple[int, int]:
    first_party = stack.enter_context(storage.local_copy(layout.CLEAN_ROOM_FIRST_PARTY))
    table = stack.enter_context(storage.local_copy(layout.partner_table(partner)))
    customers = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(first_party)})").fetchall()[0][0]
    return int(customers), int(partner_identities(con, table))
