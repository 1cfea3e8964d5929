"""Every tunable default of the engines, in one place, one default per setting.

`core.settings` builds these from the environment once, when definitions load; resources and core calls then
receive them whole (a `MetaPolicy` travels with the Graph API client, so the uploader reads its concurrency and
settle time from the client it is given), so a number is never re-stated, re-derived or renamed on its way down.
A leaf module: it imports nothing of the project, so every layer may use it.
"""

from __future__ import annotations

import dataclasses

LOCK_WAIT_SECONDS = 120.0  # AUDIENCE_LOCK_WAIT_SECONDS: a step waits this long for another run's lock
RETENTION_DAYS = 30  # AUDIENCE_RETENTION_DAYS: landed files older than this are deleted (sources may say less)
LANDING_SWEEP_SECONDS = 3600.0  # AUDIENCE_LANDING_SWEEP_SECONDS: how often landing events are checked by a listing
METRICS_NAMESPACE = "AudienceAssets"  # AUDIENCE_METRICS_NAMESPACE: the CloudWatch namespace (aws mode)


@dataclasses.dataclass(frozen=True)
class MetaPolicy:
    """How the project talks to the Marketing API: how long to keep trying, by error class, and how uploads run.

    Meta's business-use-case windows are an hour: waits are long, but each is capped, and throttles are retried
    until the deadline rather than a number of times. The first back-off after a throttle is, unless given, a
    fifteenth of the longest wait (60 s at the default 900 s), so a deployment that lowers the cap lowers it too.
    """

    timeout_seconds: float = 60.0
    transient_attempts: int = 5
    transient_base_seconds: float = 2.0
    throttle_base_seconds: float | None = None  # None: min(60 s, throttle_max_seconds / 15)
    throttle_max_seconds: float = 900.0  # META_THROTTLE_MAX_SECONDS: the longest single wait, whatever Meta says
    usage_window_seconds: float = 3600.0  # Meta's business-use-case limits count calls over a rolling hour
    pace_from_percent: int = 50  # from this reported usage on, calls are paced to the window's budget
    deadline_seconds: float = 3600.0  # META_UPLOAD_DEADLINE_SECONDS: a call or an upload gives up after this long
    concurrency: int = 4  # add and remove batches in flight at once, per upload
    settle_seconds: float = 600.0  # how long a session Meta leaves "uploading" is polled before it is recorded

    def __post_init__(self) -> None:
        if self.throttle_base_seconds is None:
            object.__setattr__(self, "throttle_base_seconds", min(60.0, self.throttle_max_seconds / 15))


@dataclasses.dataclass(frozen=True)
class Polling:
    """How a protected query is waited on: `first` seconds, doubling up to `longest`; give up after `deadline`."""

    first: float = 5.0
    longest: float = 30.0
    deadline: float = 3600.0


@dataclasses.dataclass(frozen=True)
class InflationLimits:
    """How far a compressed delivery may inflate (`AUDIENCE_MAX_INFLATED_BYTES`, `AUDIENCE_MAX_INFLATION_RATIO`):
    CSV compresses five to fifteen times, so a few megabytes that inflate to a gigabyte are a decompression
    bomb, not an export. The ratio is judged once the file has inflated past `RATIO_FROM_BYTES` (a small file
    of one repeated value may compress very well and harms nobody)."""

    max_bytes: int = 64 * 2**30
    max_ratio: float = 100.0

    RATIO_FROM_BYTES = 64 * 2**20
