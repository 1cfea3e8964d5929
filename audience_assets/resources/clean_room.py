"""The clean-room resource: runs the shipped analysis templates and brings the results back to storage.

The local engine reads the configured tables' Parquet files (copied out of the store, so the same
code works over a folder or S3) and writes each result as Parquet to `clean_room/matches/<partner>/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path

import dagster as dg

from audience_assets import layout
from audience_assets.cleanroom import template_sql
from audience_assets.cleanroom.local import LocalCleanRoomEngine, ProtectedQuery
from audience_assets.duck import connect, sql_path
from audience_assets.resources.storage import Storage


@dataclasses.dataclass(frozen=True)
class MatchResult:
    partner: str
    rows: int                        # (customer, segment attribute) pairs in the match output
    matched_customers: int           # distinct first-party customers with at least one partner record
    matched_partner_identities: int  # distinct partner identities matched
    first_party_customers: int       # rows of the first-party table (the match-rate denominator)
    partner_identities: int          # distinct identities in the partner's table
    query: ProtectedQuery            # the protected query that produced the rows


class CleanRoomQueryFailed(RuntimeError):
    pass


class LocalCleanRoom(dg.ConfigurableResource):
    """The local stand-in for an AWS Clean Rooms collaboration: a DuckDB engine over the configured tables."""

    def match(self, storage: Storage, partner: str) -> MatchResult:
        """Run `audience_match` and `overlap_count` for `partner` and store the match at `layout.matches`."""
        with contextlib.ExitStack() as stack:
            tables = {"first_party": stack.enter_context(storage.local_copy(layout.CLEAN_ROOM_FIRST_PARTY)),
                      partner: stack.enter_context(storage.local_copy(layout.partner_table(partner)))}
            results = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aa-cleanroom-")))
            engine = LocalCleanRoomEngine(tables, results)
            match = _succeeded(engine.run(template_sql("audience_match", partner=partner)), "audience_match", partner)
            overlap = _succeeded(engine.run(template_sql("overlap_count", partner=partner)), "overlap_count", partner)
            with connect() as con:
                customers, identities = con.execute(
                    f"SELECT matched_customers, matched_partner_identities FROM read_parquet({sql_path(overlap.result_path)})"
                ).fetchall()[0]
                first_party, identities_total = con.execute(
                    f"SELECT (SELECT count(*) FROM read_parquet({sql_path(tables['first_party'])})), "
                    f"(SELECT count(*) FROM (SELECT DISTINCT hashed_email, hashed_phone, hashed_madid "
                    f"FROM read_parquet({sql_path(tables[partner])})))").fetchall()[0]
            storage.upload(match.result_path, layout.matches(partner))
            return MatchResult(partner, match.rows, int(customers), int(identities), int(first_party),
                               int(identities_total), match)


def _succeeded(query: ProtectedQuery, template: str, partner: str) -> ProtectedQuery:
    if query.status != "SUCCESS":
        raise CleanRoomQueryFailed(f"clean-room query {query.id} ({template} for {partner}) ended {query.status}: {query.error}")
    return query
