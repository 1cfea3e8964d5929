"""The ingest stage's definitions: its assets, the jobs the landing-zone sensor launches, and the sensor."""

import datetime as dt
from pathlib import Path

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, InflationLimits
from audience_assets.defs.ingest.assets import build_ingest_assets
from audience_assets.defs.ingest.jobs import build_ingest_jobs
from audience_assets.defs.ingest.sensors import EVENT_GRACE, build_landing_zone_sensor


def build(
    config: ProjectConfig,
    storage_kind: str,
    demo_dir: Path | None = None,
    limits: InflationLimits = DEFAULT_LIMITS,
    queue_url: str = "",
    sweep_seconds: float = 3600.0,
    event_grace: dt.timedelta = EVENT_GRACE,
) -> dg.Definitions:
    jobs = build_ingest_jobs()
    return dg.Definitions(
        assets=build_ingest_assets(config, storage_kind, limits),
        jobs=jobs,
        sensors=[build_landing_zone_sensor(config, jobs, demo_dir, queue_url, sweep_seconds, event_grace)],
    )
