"""Running one protected query to the end: start it, poll it with back-off until it ends or a deadline
passes, cancel it when the caller is interrupted, and fail loudly with the service's own message.

The client is anything with the boto3 `cleanrooms` client's protected-query methods: the real client in
aws mode, `standins.local_clean_room.LocalCollaboration` locally. botocore ships no waiter for Clean Rooms, hence
the loop.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from audience_assets.core.policies import Polling

log = logging.getLogger(__name__)
TERMINAL = frozenset({"SUCCESS", "FAILED", "TIMED_OUT", "CANCELLED"})  # a protected query's final statuses


class ProtectedQueryFailed(RuntimeError):
    """The query ended FAILED, TIMED_OUT or CANCELLED, or did not end before the deadline."""

    def __init__(self, message: str, *, query_id: str, status: str):
        super().__init__(message)
        self.query_id, self.status = query_id, status


@dataclasses.dataclass(frozen=True)
class Finished:
    id: str
    status: str
    location: str  # result.output.s3.location: where the result parts are
    duration_ms: int  # statistics.totalDurationInMillis (service side), else measured here
    statuses: tuple[str, ...]  # every status this caller saw, in order


def run(
    client: Any,
    *,
    membership_id: str,
    sql_parameters: Mapping[str, Any],
    bucket: str,
    key_prefix: str,
    what: str,
    polling: Polling = Polling(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Finished:
    """Run a query whose results go to `s3://bucket/key_prefix/` as Parquet; `what` names it in errors."""
    started = clock()
    query = _start(client, membership_id, sql_parameters, bucket, key_prefix, what)
    watched = _Watched(client, membership_id, query["id"], what)
    statuses = [query["status"]]
    log.info("protected query %s (%s) %s", watched.query_id, what, query["status"])
    try:
        query = _follow(watched, query, statuses, polling, sleep, lambda: clock() - started)
    except ProtectedQueryFailed:
        raise
    except BaseException:  # the run was terminated (or the process is going down): stop paying for the query
        _cancel(client, membership_id, watched.query_id)
        raise
    _refuse_unsuccessful(watched, query)
    duration = query.get("statistics", {}).get("totalDurationInMillis")
    return Finished(
        watched.query_id,
        "SUCCESS",
        query["result"]["output"]["s3"]["location"],
        int(duration if duration is not None else (clock() - started) * 1000),
        tuple(statuses),
    )


@dataclasses.dataclass(frozen=True)
class _Watched:
    """What every step after the start needs to reach the query and to name it in logs and errors."""

    client: Any
    membership_id: str
    query_id: str
    what: str

    def cancel_or(self, status: str) -> str:
        """The status to report on giving up: CANCELLED if the service agreed to stop the query, else `status`."""
        return "CANCELLED" if _cancel(self.client, self.membership_id, self.query_id) else status


def _start(
    client: Any, membership_id: str, sql_parameters: Mapping[str, Any], bucket: str, key_prefix: str, what: str
) -> dict[str, Any]:
    """The started query; a refusal up front becomes the same ProtectedQueryFailed a FAILED query would."""
    try:
        return client.start_protected_query(
            type="SQL",
            membershipIdentifier=membership_id,
            sqlParameters=dict(sql_parameters),
            resultConfiguration={
                "outputConfiguration": {"s3": {"resultFormat": "PARQUET", "bucket": bucket, "keyPrefix": key_prefix}}
            },
        )["protectedQuery"]
    except ClientError as error:  # refused up front (a rule violation may surface here or as a FAILED query)
        detail = error.response.get("Error", {})
        raise ProtectedQueryFailed(
            f"the clean room refused to start {what}: {detail.get('Message', error)} ({detail.get('Code', 'no code')})",
            query_id="",
            status="NOT_STARTED",
        ) from error


def _follow(
    watched: _Watched,
    query: dict[str, Any],
    statuses: list[str],
    polling: Polling,
    sleep: Callable[[float], None],
    elapsed: Callable[[], float],
) -> dict[str, Any]:
    """The query once it has ended, polled with doubling back-off; each new status is logged and kept in `statuses`."""
    delay = polling.first
    while query["status"] not in TERMINAL:
        if elapsed() > polling.deadline:
            raise ProtectedQueryFailed(
                f"protected query {watched.query_id} ({watched.what}) did not finish within {polling.deadline:.0f} s "
                "and was cancelled; raise the deadline or check the collaboration's query quota",
                query_id=watched.query_id,
                status=watched.cancel_or(query["status"]),
            )
        query = _poll(watched, query)
        if query["status"] != statuses[-1]:
            statuses.append(query["status"])
            log.info("protected query %s (%s) %s", watched.query_id, watched.what, query["status"])
        if query["status"] not in TERMINAL:
            sleep(delay)
            delay = min(delay * 2, polling.longest)
    return query


def _poll(watched: _Watched, query: dict[str, Any]) -> dict[str, Any]:
    """The query's latest state; after a transient failure the last one seen, since the next poll may succeed."""
    try:
        return watched.client.get_protected_query(
            membershipIdentifier=watched.membership_id, protectedQueryIdentifier=watched.query_id
        )["protectedQuery"]
    except (ClientError, BotoCoreError) as error:
        if not _transient(error):
            raise ProtectedQueryFailed(
                f"could not follow protected query {watched.query_id} ({watched.what}), so it was cancelled: {error}",
                query_id=watched.query_id,
                status=watched.cancel_or(query["status"]),
            ) from error
        log.warning("protected query %s (%s): polling failed, retrying: %s", watched.query_id, watched.what, error)
        return query


def _refuse_unsuccessful(watched: _Watched, query: Mapping[str, Any]) -> None:
    """Fail loudly, with the service's own reason, on a query that ended other than SUCCESS."""
    if query["status"] != "SUCCESS":
        error = query.get("error") or {}
        raise ProtectedQueryFailed(
            f"protected query {watched.query_id} ({watched.what}) ended {query['status']}: "
            f"{error.get('message', 'the service gave no reason')} ({error.get('code', 'no code')})",
            query_id=watched.query_id,
            status=query["status"],
        )


def _transient(error: ClientError | BotoCoreError) -> bool:
    """Whether a failed poll is worth repeating (throttled, a server error, the network) once botocore's own
    retries are spent; the query keeps running meanwhile, so the deadline bounds the repeats."""
    if isinstance(error, BotoCoreError):
        return True
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error.response.get("Error", {}).get("Code") in _TRANSIENT_CODES or status == 429 or status >= 500


_TRANSIENT_CODES = {"ThrottlingException", "InternalServerException", "ServiceUnavailableException", "RequestTimeout"}


def _cancel(client: Any, membership_id: str, query_id: str) -> bool:
    """Ask the service to cancel the query; whether it agreed."""
    try:
        client.update_protected_query(
            membershipIdentifier=membership_id, protectedQueryIdentifier=query_id, targetStatus="CANCELLED"
        )
        log.warning("protected query %s cancelled", query_id)
        return True
    except (ClientError, BotoCoreError) as error:  # already ended, or the service is unreachable: nothing to stop
        log.warning("could not cancel protected query %s: %s", query_id, error)
        return False
