"""The clean-room resource: runs a partner's match (`core.cleanroom.match`) on the engine this deployment has,
the local engine (`standins.local_clean_room`) or a membership of a real AWS Clean Rooms collaboration."""

from __future__ import annotations

import contextlib
from pathlib import Path

import boto3
import dagster as dg
from botocore.config import Config

from audience_assets.core.cleanroom.match import MatchResult, MatchSession, aws_session, run_match
from audience_assets.core.cleanroom.protected_query import Polling
from audience_assets.core.config import ProjectConfig
from audience_assets.core.scratch import scratch
from audience_assets.core.store import S3Store, Store
from audience_assets.standins.local_clean_room import local_session


class CleanRoom(dg.ConfigurableResource):
    poll_first_seconds: float = Polling.first
    poll_longest_seconds: float = Polling.longest
    query_deadline_seconds: float = Polling.deadline

    @property
    def engine(self) -> str:
        raise NotImplementedError

    def session(
        self, stack: contextlib.ExitStack, store: Store, config: ProjectConfig, partner: str, work: Path
    ) -> MatchSession:
        raise NotImplementedError

    def match(self, store: Store, config: ProjectConfig, partner: str, run_id: str) -> MatchResult:
        polling = Polling(self.poll_first_seconds, self.poll_longest_seconds, self.query_deadline_seconds)
        with contextlib.ExitStack() as stack:
            work = stack.enter_context(scratch("cleanroom"))
            return run_match(store, partner, run_id, self.session(stack, store, config, partner, work), polling, work)


class LocalCleanRoom(CleanRoom):
    """The local stand-in for an AWS Clean Rooms collaboration: a DuckDB engine enforcing the tables' rules."""

    poll_first_seconds: float = 0.05
    poll_longest_seconds: float = 0.5

    @property
    def engine(self) -> str:
        return "local engine (DuckDB)"

    def session(self, stack, store, config, partner, work) -> MatchSession:
        return local_session(stack, store, config, partner, work)


class AwsCleanRoom(CleanRoom):
    """A membership of a real AWS Clean Rooms collaboration (`CLEANROOMS_MEMBERSHIP_ID`); each partner runs its
    own templates, found by name in the membership or set by ARN in partners.yaml (see `match.aws_session`),
    and results go to `AUDIENCE_RESULTS_BUCKET`, a bucket that holds no data source (Spark's rule)."""

    membership_id: str
    results_bucket: str
    results_prefix: str = "results/"
    region_name: str | None = None

    @property
    def engine(self) -> str:
        return f"AWS Clean Rooms (membership {self.membership_id})"

    def client(self):
        return boto3.client(
            "cleanrooms",
            region_name=self.region_name,
            config=Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=10, read_timeout=60),
        )

    def session(self, stack, store, config, partner, work) -> MatchSession:
        results = S3Store(self.results_bucket, "", region_name=self.region_name)  # read only: the service writes
        return aws_session(
            self.client(), self.membership_id, config.partners[partner], partner, results, self.results_prefix
        )
