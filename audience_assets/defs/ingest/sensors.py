"""The landing-zone sensor: every new delivered object requests exactly one run, across ticks and restarts.

Two ways to learn of new objects, one setting chooses (`AUDIENCE_LANDING_QUEUE_URL`):

- **Events** (aws mode with the stack's queue): each tick drains the SQS queue that EventBridge fills with the
  data bucket's "Object Created" events (`core.ingestion.events`), deleting a tick's messages only on the next
  tick, once its run requests are stored. A periodic **sweep** (`AUDIENCE_LANDING_SWEEP_SECONDS`, hourly) lists
  the landing zone and requests, with a warning naming it, every delivery that no event handed out and no
  ingestion has seen (its source's arrival log does not know it): an event was lost.
- **Listing** (local mode, and aws mode without a queue): each tick lists the landing prefixes. The cursor
  (JSON) holds a watermark, the newest `last_modified` handed out, and the objects handed out within `OVERLAP`
  before it with their versions; a delivery newer than `watermark - OVERLAP` and not handed out at its version
  is new. The overlap catches objects that become visible late with an older timestamp (same-second arrivals,
  multipart uploads, whose LastModified is when the upload began). At most `MAX_RUNS_PER_TICK` runs per tick:
  a first start on a prefix that already holds thousands of objects drains the backlog over successive ticks,
  oldest first.

Either way the run key is `<key>@<version>` (the S3 ETag), so a re-upload with new content runs again, an
unchanged object never does, and a duplicated or redelivered event is one run. dagster-aws's `get_objects` is not
used: listing goes through the storage resource so the same sensor serves a local folder and S3, and its
`since_key` cursor raises once that key is deleted and misses objects whose key sorts before it
(dagster-io/dagster#22892); the watermark plus overlap above is the fix that issue recommends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path

import dagster as dg

from audience_assets.core.config import FileContract, ProjectConfig
from audience_assets.core.demo import ensure_demo_data
from audience_assets.core.ingestion.arrivals import ArrivalLog
from audience_assets.core.ingestion.deliveries import skipped_reason
from audience_assets.core.ingestion.events import LandingQueue, arrived
from audience_assets.core.ingestion.inventory import LandingListing, ignored_objects
from audience_assets.core.policies import LANDING_SWEEP_SECONDS
from audience_assets.core.store import Store, StoredObject
from audience_assets.defs.ingest.jobs import FIRST_PARTY_JOB, LANDING_REPORT_JOB, PARTNER_DATA_JOB, SUPPRESSION_JOB
from audience_assets.defs.resources import Storage

OVERLAP = dt.timedelta(hours=1)
EVENT_GRACE = dt.timedelta(minutes=10)  # an event arrives within seconds; older than this and unseen, it was lost
MISSED_EVENT_TAG = "audience_assets/missed_event"  # on a run the sweep requested because no event announced it
MAX_RUNS_PER_TICK = 500
SENSOR_INTERVAL_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class Target:
    prefix: str
    job_name: str
    contract: FileContract
    partition_key: str | None = None

    @property
    def source(self) -> str:
        return self.partition_key or ("first_party" if self.job_name == FIRST_PARTY_JOB else "suppression")


def landing_targets(config: ProjectConfig) -> list[Target]:
    sources = config.sources
    return [
        *(
            Target(sources.partner_prefix(p), PARTNER_DATA_JOB, sources.contract(p), p)
            for p in sorted(config.partners)
            if not config.partners[p].clean_room.member  # nothing of a member's lands here
        ),
        Target(sources.first_party_prefix, FIRST_PARTY_JOB, sources.first_party),
        Target(sources.suppression_prefix, SUPPRESSION_JOB, sources.suppression),
    ]


@dataclasses.dataclass
class LandingCursor:
    watermark: dt.datetime | None = None
    recent: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)  # key -> (version, last_modified)
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> version, already reported
    receipts: list[str] = dataclasses.field(default_factory=list)  # events handed out, deleted on the next tick
    swept: float = 0.0  # when the last sweep listed the landing zone (events mode)

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        mark = dt.datetime.fromisoformat(data["watermark"]) if data.get("watermark") else None
        recent = {k: (v, t) for k, (v, t) in data.get("recent", {}).items()}
        return cls(mark, recent, data.get("ignored", {}), data.get("receipts", []), data.get("swept", 0.0))

    def dump(self) -> str:
        return json.dumps(
            {
                "watermark": self.watermark.isoformat() if self.watermark else None,
                "recent": {k: list(v) for k, v in sorted(self.recent.items())},
                "ignored": dict(sorted(self.ignored.items())),
                "receipts": self.receipts,
                "swept": self.swept,
            },
            separators=(",", ":"),
        )

    def is_new(self, obj: StoredObject) -> bool:
        if self.watermark is not None and obj.last_modified < self.watermark - OVERLAP:
            return False
        seen = self.recent.get(obj.key)
        return seen is None or seen[0] != obj.version

    def hand_out(self, obj: StoredObject) -> None:
        self.recent[obj.key] = (obj.version, obj.last_modified.timestamp())
        if self.watermark is None or obj.last_modified > self.watermark:
            self.watermark = obj.last_modified

    def forget_old(self) -> None:
        """Drop entries before `watermark - OVERLAP`: such objects are never listed as new again."""
        if self.watermark is not None:
            horizon = (self.watermark - OVERLAP).timestamp()
            self.recent = {k: v for k, v in self.recent.items() if v[1] >= horizon}


def new_deliveries(
    store: Store | LandingListing, targets: list[Target], cursor: LandingCursor, limit: int | None = None
) -> list[tuple[StoredObject, Target]]:
    """The oldest `limit` deliveries not handed out yet, marked as handed out in `cursor`."""
    found = [
        (obj, target)
        for target in targets
        for obj in store.list(target.prefix)
        if skipped_reason(obj, target.prefix, target.contract) is None and cursor.is_new(obj)
    ]
    found.sort(key=lambda pair: (pair[0].last_modified, pair[0].key))
    chosen = found[: limit or MAX_RUNS_PER_TICK]
    for obj, _ in chosen:
        cursor.hand_out(obj)
    cursor.forget_old()
    return chosen


def target_of(obj: StoredObject, targets: list[Target]) -> Target | None:
    """The source that reads `obj`, if any does (its prefix, and a delivery's name and depth)."""
    return next(
        (t for t in targets if obj.key.startswith(t.prefix) and skipped_reason(obj, t.prefix, t.contract) is None),
        None,
    )


def from_events(
    queue: LandingQueue, bucket: str, targets: list[Target], cursor: LandingCursor, log
) -> list[tuple[StoredObject, Target]]:
    """The deliveries the queue's events name, each version once, marked as handed out; the previous tick's
    messages are deleted now (that tick's run requests are stored) and this tick's kept for the next."""
    undeleted = queue.delete(cursor.receipts)
    if undeleted:
        log.warning(
            f"{len(undeleted)} queue message(s) of the last tick could not be deleted ({undeleted[0]}); they come "
            "back and are recognised as handed out, or reach the dead-letter queue after 5 receipts"
        )
    messages = queue.receive(MAX_RUNS_PER_TICK)
    chosen: dict[str, tuple[StoredObject, Target]] = {}
    foreign = 0
    for message in messages:
        obj = arrived(message.body, bucket)
        target = target_of(obj, targets) if obj is not None else None
        if obj is None or target is None:
            foreign += 1  # not an object-created event of a delivery: deleted with the rest, never retried
            continue
        handed = cursor.recent.get(obj.key)
        if handed is None or handed[0] != obj.version:  # a duplicated or redelivered event is the same run
            chosen.setdefault(f"{obj.key}@{obj.version}", (obj, target))
    for obj, _ in chosen.values():
        cursor.hand_out(obj)
    cursor.receipts = [m.receipt for m in messages]
    if foreign:
        log.info(f"{foreign} queue message(s) named nothing a source reads (other prefixes, folders, deletions)")
    return list(chosen.values())


def missed_by_events(
    listing: LandingListing,
    targets: list[Target],
    cursor: LandingCursor,
    now: dt.datetime,
    log,
    grace: dt.timedelta = EVENT_GRACE,
) -> list[tuple[StoredObject, Target]]:
    """The sweep: deliveries no event handed out and no ingestion has seen (their source's arrival log does
    not know them at their version), older than `grace`: their events were lost. Each is reported."""
    known = {
        t.source: ArrivalLog.load(listing.store, t.source) for t in targets
    }  # read, never written: the sensor only looks
    missed = []
    for target in targets:
        for obj in listing.list(target.prefix):
            if skipped_reason(obj, target.prefix, target.contract) is not None:
                continue
            handed = cursor.recent.get(obj.key)
            if (handed and handed[0] == obj.version) or known[target.source].identity(obj) is not None:
                continue
            if obj.last_modified > now - grace:
                continue  # its event may still be on its way
            missed.append((obj, target))
    chosen = missed[:MAX_RUNS_PER_TICK]  # the rest: the next sweep (they are not marked as handed out)
    for obj, _ in chosen:
        log.warning(
            f"landing event missed: {obj.key} (version {obj.version}, {obj.last_modified:%Y-%m-%d %H:%M} UTC) "
            "was never announced by an event; the sweep requests its run (check the bucket's EventBridge "
            "notifications and LandingRule, and the queue's dead letters)"
        )
        cursor.hand_out(obj)
    if len(missed) > len(chosen):
        log.warning(f"{len(missed) - len(chosen)} more missed deliveries wait for the next sweep")
    return chosen


def build_landing_zone_sensor(
    config: ProjectConfig,
    jobs: list,
    demo_dir: Path | None = None,
    queue_url: str = "",
    sweep_seconds: float = LANDING_SWEEP_SECONDS,
    event_grace: dt.timedelta = EVENT_GRACE,
) -> dg.SensorDefinition:
    """`demo_dir`: local mode with AUDIENCE_DEMO_DATA on, the data folder whose empty landing zone the first tick
    seeds with the demo data (so `dagster dev` on a fresh clone shows data; loading definitions writes nothing).
    `queue_url`: drain landing events from this SQS queue, sweeping every `sweep_seconds` (see the module)."""
    targets = landing_targets(config)

    @dg.sensor(
        name="landing_zone_sensor",
        jobs=jobs,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests one ingestion run per new file under landing/ (partners, first party, "
        "suppression), from the bucket's events when a queue is configured, else by listing; run key = object "
        "key @ version, so nothing runs twice.",
    )
    def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: Storage) -> dg.SensorResult:
        if demo_dir is not None and ensure_demo_data(demo_dir):
            context.log.info(f"the landing zone was empty: demo data seeded under {demo_dir / 'landing'}")
        cursor = LandingCursor.parse(context.cursor)
        store = storage.store()
        if queue_url:
            chosen, missed, listing = from_events_and_sweep(
                store, config, targets, cursor, context.log, queue_url, sweep_seconds, event_grace
            )
        else:
            listing = LandingListing(store, config)  # one listing serves both questions below
            chosen, missed = new_deliveries(listing, targets, cursor), []
        requests = [delivery_request(obj, target, missed=(obj, target) in missed) for obj, target in chosen]
        if listing is not None and (report := unread_report(listing, cursor, context.log)) is not None:
            requests.append(report)  # the UI's landing_zone_report shows what is not read, and why
        if chosen:
            context.log.info(f"{len(chosen)} new deliveries; watermark {cursor.watermark.isoformat()}")
        return dg.SensorResult(
            run_requests=requests, cursor=cursor.dump(), skip_reason=None if requests else "no new deliveries"
        )

    return landing_zone_sensor


def from_events_and_sweep(
    store: Store,
    config: ProjectConfig,
    targets: list[Target],
    cursor: LandingCursor,
    log,
    queue_url: str,
    sweep_seconds: float,
    event_grace: dt.timedelta,
) -> tuple[list[tuple[StoredObject, Target]], list[tuple[StoredObject, Target]], LandingListing | None]:
    """Events mode: the deliveries the queue announced, plus, when a sweep is due, those whose events were lost
    (returned apart too, to be tagged); the sweep's listing, if one was made, serves the unread report."""
    now = dt.datetime.now(dt.UTC)
    listing: LandingListing | None = None
    missed: list[tuple[StoredObject, Target]] = []
    chosen = from_events(LandingQueue(queue_url), getattr(store, "bucket", ""), targets, cursor, log)
    if now.timestamp() - cursor.swept >= sweep_seconds:
        listing = LandingListing(store, config)
        missed = missed_by_events(listing, targets, cursor, now, log, event_grace)
        chosen += missed
        cursor.swept = now.timestamp()
    cursor.forget_old()
    return chosen, missed, listing


def delivery_request(obj: StoredObject, target: Target, *, missed: bool) -> dg.RunRequest:
    """One ingestion run per delivered version (the run key), tagged when only the sweep found it."""
    return dg.RunRequest(
        run_key=f"{obj.key}@{obj.version}",
        job_name=target.job_name,
        partition_key=target.partition_key,
        tags={
            "audience_assets/object": obj.key[:255],
            **({MISSED_EVENT_TAG: "true"} if missed else {}),
        },
    )


def unread_report(listing: LandingListing, cursor: LandingCursor, log) -> dg.RunRequest | None:
    """What the landing zone holds that no source reads: each newly unread object logged once, and a refresh of
    `landing_zone_report` requested when that set changed."""
    ignored = {i.key: i for i in ignored_objects(listing, listing.config)}
    news = [i for key, i in sorted(ignored.items()) if cursor.ignored.get(key) != i.version]
    for item in news:
        log.warning(f"not read: {item.key} ({item.size:,} bytes): {item.reason}")
    changed = set(ignored) != set(cursor.ignored) or bool(news)
    cursor.ignored = {key: i.version for key, i in ignored.items()}
    if not changed:
        return None
    state = hashlib.sha256(json.dumps(cursor.ignored, sort_keys=True).encode()).hexdigest()[:16]
    return dg.RunRequest(run_key=f"landing_zone_report@{state}", job_name=LANDING_REPORT_JOB)
