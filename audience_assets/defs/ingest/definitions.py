"""The ingest stage's definitions: its assets, the jobs the landing-zone sensor launches, the sensor, and the
daily schedule of the partners that are collaboration members (nothing of theirs lands: no event says their table
changed, so their match is refreshed once a day instead)."""

import datetime as dt
from pathlib import Path

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, InflationLimits
from audience_assets.core.policies import LANDING_SWEEP_SECONDS
from audience_assets.defs.ingest.assets import build_ingest_assets
from audience_assets.defs.ingest.jobs import PARTNER_DATA_JOB, build_ingest_jobs
from audience_assets.defs.ingest.sensors import EVENT_GRACE, build_landing_zone_sensor


def build(
    config: ProjectConfig,
    storage_kind: str,
    demo_dir: Path | None = None,
    limits: InflationLimits = DEFAULT_LIMITS,
    queue_url: str = "",
    sweep_seconds: float = LANDING_SWEEP_SECONDS,
    event_grace: dt.timedelta = EVENT_GRACE,
) -> dg.Definitions:
    jobs = build_ingest_jobs()
    members = sorted(p for p, contract in config.partners.items() if contract.clean_room.member)
    return dg.Definitions(
        assets=build_ingest_assets(config, storage_kind, limits),
        jobs=jobs,
        sensors=[build_landing_zone_sensor(config, jobs, demo_dir, queue_url, sweep_seconds, event_grace)],
        schedules=[member_schedule(members, next(j for j in jobs if j.name == PARTNER_DATA_JOB))] if members else [],
    )


MEMBER_CRON = "0 5 * * *"


def member_schedule(members: list[str], job) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="member_partners_daily",
        cron_schedule=MEMBER_CRON,
        job=job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Records {', '.join(members)} (collaboration members) daily at 05:00 UTC, so their matches and "
        "audiences are refreshed by automation.",
    )
    def member_partners_daily(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
        return [dg.RunRequest(partition_key=p, run_key=f"{p}@{stamp}") for p in members]

    return member_partners_daily
