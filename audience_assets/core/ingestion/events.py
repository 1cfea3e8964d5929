"""The landing zone's events: S3 "Object Created" events, routed by EventBridge to an SQS queue (the stack's
`LandingQueue`, archived for replay, a dead-letter queue behind it), drained by the landing-zone sensor instead
of listing the bucket on every tick.

SQS delivers at least once: a message may come twice, or again after its visibility timeout. So a message is
deleted only on the tick after the one that handed its object out (once that tick's run requests are stored),
and each object version requests one run, keyed `<key>@<ETag>` as the listing does (Dagster drops a run key it
has seen); the same object found by the periodic listing sweep is the same run. A message that is not an
object-created event of the landing zone is deleted and counted, never retried forever.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import boto3
from botocore.config import Config

from audience_assets.core.store import StoredObject

BATCH = 10  # SQS hands out at most 10 messages per ReceiveMessage


@dataclasses.dataclass(frozen=True)
class Message:
    receipt: str
    body: str


def arrived(body: str, bucket: str) -> StoredObject | None:
    """The object an EventBridge "Object Created" event (as SQS delivers it) names in `bucket`, as the store
    lists it (key, size, time, ETag); None for anything else."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("source") != "aws.s3" or event.get("detail-type") != "Object Created":
        return None
    detail = event.get("detail") or {}
    obj = detail.get("object") or {}
    if (detail.get("bucket") or {}).get("name") != bucket or not obj.get("key"):
        return None
    etag = str(obj.get("etag") or obj.get("eTag") or "").strip('"')
    try:
        when = dt.datetime.fromisoformat(str(event.get("time")).replace("Z", "+00:00"))
    except ValueError:
        when = dt.datetime.now(dt.UTC)
    if when.tzinfo is None:  # moto writes epoch seconds as text; S3 writes ISO 8601
        when = when.replace(tzinfo=dt.UTC)
    return StoredObject(str(obj["key"]), int(obj.get("size") or 0), when, etag)


class LandingQueue:
    """The SQS queue of landing-zone events (`AUDIENCE_LANDING_QUEUE_URL`)."""

    def __init__(self, url: str, client: Any = None):
        self.url = url
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "sqs",
                region_name=_region(self.url),
                config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=20),
            )
        return self._client

    def receive(self, limit: int) -> list[Message]:
        """Up to `limit` messages waiting now (no long poll: a sensor tick must stay short)."""
        found: list[Message] = []
        while len(found) < limit:
            got = (
                self.client()
                .receive_message(
                    QueueUrl=self.url, MaxNumberOfMessages=min(BATCH, limit - len(found)), WaitTimeSeconds=0
                )
                .get("Messages", [])
            )
            if not got:
                break
            found += [Message(m["ReceiptHandle"], m["Body"]) for m in got]
        return found

    def delete(self, receipts: Iterable[str]) -> list[str]:
        """Delete handed-out messages; returns SQS's reason for each one it did not delete."""
        pending, failed = list(receipts), []
        for start in range(0, len(pending), BATCH):
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(pending[start : start + BATCH])]
            answer = self.client().delete_message_batch(QueueUrl=self.url, Entries=entries)
            failed += [f"{f.get('Code', '?')}: {f.get('Message', '')}" for f in answer.get("Failed", [])]
        return failed


def _region(url: str) -> str | None:
    """The region of a queue URL (`https://sqs.<region>.amazonaws.com/...`); None for a stand-in's URL."""
    host = url.split("//", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    return parts[1] if len(parts) > 3 and parts[0] == "sqs" else None
