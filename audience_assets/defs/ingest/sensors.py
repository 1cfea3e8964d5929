"""The landing-zone sensor: every new delivered object requests exactly one run, across ticks and restarts.

The cursor (JSON) holds a watermark, the newest `last_modified` handed out, and the objects handed out
within `OVERLAP` before it with their versions. Each tick lists the landing prefixes and requests a run
for every delivery that is newer than `watermark - OVERLAP` and not already handed out at that version;
the overlap catches objects that become visible late with an older timestamp (same-second arrivals, and
multipart uploads, whose LastModified is when the upload began). The run key is `<key>@<version>` (the
S3 ETag), so a re-upload with new content runs again and an unchanged object never does, even if the
cursor were lost. At most `MAX_RUNS_PER_TICK` runs are requested per tick: a first start on a prefix
that already holds thousands of objects drains the backlog over successive ticks, oldest first.

dagster-aws's `get_objects` helper is not used: listing goes through the storage resource so the same
sensor serves a local folder and S3, and its `since_key` cursor raises once that key is deleted and
misses objects whose key sorts before it (dagster-io/dagster#22892); the watermark plus overlap above
is the fix that issue recommends.
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
from audience_assets.core.ingestion.deliveries import skipped_reason
from audience_assets.core.ingestion.inventory import LandingListing, ignored_objects
from audience_assets.core.store import Store, StoredObject
from audience_assets.defs.ingest.jobs import FIRST_PARTY_JOB, LANDING_REPORT_JOB, PARTNER_DATA_JOB, SUPPRESSION_JOB
from audience_assets.defs.resources import Storage

OVERLAP = dt.timedelta(hours=1)
MAX_RUNS_PER_TICK = 500
SENSOR_INTERVAL_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class Target:
    prefix: str
    job_name: str
    contract: FileContract
    partition_key: str | None = None


def landing_targets(config: ProjectConfig) -> list[Target]:
    sources = config.sources
    return [
        *(Target(sources.partner_prefix(p), PARTNER_DATA_JOB, sources.contract(p), p) for p in sorted(config.partners)),
        Target(sources.first_party_prefix, FIRST_PARTY_JOB, sources.first_party),
        Target(sources.suppression_prefix, SUPPRESSION_JOB, sources.suppression),
    ]


@dataclasses.dataclass
class LandingCursor:
    watermark: dt.datetime | None = None
    recent: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)  # key -> (version, last_modified)
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> version, already reported

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        mark = dt.datetime.fromisoformat(data["watermark"]) if data.get("watermark") else None
        return cls(mark, {k: (v, t) for k, (v, t) in data.get("recent", {}).items()}, data.get("ignored", {}))

    def dump(self) -> str:
        return json.dumps(
            {
                "watermark": self.watermark.isoformat() if self.watermark else None,
                "recent": {k: list(v) for k, v in sorted(self.recent.items())},
                "ignored": dict(sorted(self.ignored.items())),
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


def build_landing_zone_sensor(config: ProjectConfig, jobs: list, demo_dir: Path | None = None) -> dg.SensorDefinition:
    """`demo_dir`: local mode with AUDIENCE_DEMO_DATA on, the data folder whose empty landing zone the first tick
    seeds with the demo data (so `dagster dev` on a fresh clone shows data; loading definitions writes nothing)."""
    targets = landing_targets(config)

    @dg.sensor(
        name="landing_zone_sensor",
        jobs=jobs,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests one ingestion run per new file under landing/ (partners, first party, "
        "suppression); run key = object key @ version, so nothing runs twice.",
    )
    def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: Storage) -> dg.SensorResult:
        if demo_dir is not None and ensure_demo_data(demo_dir):
            context.log.info(f"the landing zone was empty: demo data seeded under {demo_dir / 'landing'}")
        cursor = LandingCursor.parse(context.cursor)
        listing = LandingListing(storage.store(), config)  # one listing serves both questions below
        chosen = new_deliveries(listing, targets, cursor)
        ignored = {i.key: i for i in ignored_objects(listing, config)}
        news = [i for key, i in sorted(ignored.items()) if cursor.ignored.get(key) != i.version]
        for item in news:
            context.log.warning(f"not read: {item.key} ({item.size:,} bytes): {item.reason}")
        report_changed = set(ignored) != set(cursor.ignored) or bool(news)
        cursor.ignored = {key: i.version for key, i in ignored.items()}
        requests = [
            dg.RunRequest(
                run_key=f"{obj.key}@{obj.version}",
                job_name=target.job_name,
                partition_key=target.partition_key,
                tags={"audience_assets/object": obj.key[:255]},
            )
            for obj, target in chosen
        ]
        if report_changed:  # the UI's landing_zone_report shows what is not read, and why
            state = hashlib.sha256(json.dumps(cursor.ignored, sort_keys=True).encode()).hexdigest()[:16]
            requests.append(dg.RunRequest(run_key=f"landing_zone_report@{state}", job_name=LANDING_REPORT_JOB))
        if chosen:
            context.log.info(f"{len(chosen)} new deliveries; watermark {cursor.watermark.isoformat()}")
        return dg.SensorResult(
            run_requests=requests, cursor=cursor.dump(), skip_reason=None if requests else "no new deliveries"
        )

    return landing_zone_sensor
