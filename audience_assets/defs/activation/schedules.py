"""Each audience's daily refresh, on its own `refresh_cron` (audiences.yaml): a schedule per distinct cron of a
tenant materializes `audience_members` for exactly the audiences declaring it; what follows (chunks, the Meta
audience) runs through automation as for any new data. (An automation condition's cron applies to every
partition of an asset alike, so per-audience crons need schedules.)"""

import hashlib
from typing import Any

import dagster as dg

from audience_assets.defs.activation.assets import Shape


def refresh_schedules(shape: Shape) -> tuple[list[Any], list[dg.ScheduleDefinition]]:
    config, tenant = shape.config, shape.tenant
    by_cron: dict[str, list[str]] = {}
    for name in config.audiences_of(tenant):
        by_cron.setdefault(config.audiences[name].refresh_cron, []).append(name)
    label = f"{tenant}_" if config.multi_tenant else ""
    job = dg.define_asset_job(
        f"{label}audience_refresh_job",
        selection=[shape.key("audience_members"), shape.key("audience_holdout")],
        description="Refreshes audience members (their own refresh_cron); automation carries the change to Meta.",
    )
    schedules = []
    for cron, audiences in sorted(by_cron.items()):
        schedules.append(
            _schedule(f"{label}audience_refresh_{hashlib.sha256(cron.encode()).hexdigest()[:8]}", cron, job, audiences)
        )
    return [job], schedules


def _schedule(name: str, cron: str, job: Any, audiences: list[str]) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=name,
        cron_schedule=cron,
        job=job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Refreshes {', '.join(audiences)} at {cron!r} (UTC), their refresh_cron.",
    )
    def refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
        return [dg.RunRequest(partition_key=audience, run_key=f"{audience}@{stamp}") for audience in audiences]

    return refresh
