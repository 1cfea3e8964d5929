"""Operations' jobs: the retention cleanup (daily) and `replay_job`, which asks for every dead-lettered run to be
replayed (`replay_sensor` launches the runs)."""

import datetime as dt
import json

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.retention import delete_expired_exports
from audience_assets.defs.resources import Storage


def build_retention_job(config: ProjectConfig, keep_days: int) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """A daily job deleting CRM exports older than `keep_days` (AUDIENCE_RETENTION_DAYS)."""
    prefix = config.sources.first_party_prefix

    @dg.op(description=f"Delete first-party exports under {prefix} older than {keep_days} days.")
    def delete_expired_first_party_exports(context: dg.OpExecutionContext, storage: Storage) -> None:
        deleted = delete_expired_exports(storage.store(), prefix, keep_days=keep_days)
        context.log.info(f"retention: {len(deleted)} export(s) older than {keep_days} days deleted")
        context.log_event(
            dg.AssetObservation(
                asset_key="first_party_customers",
                metadata={"exports_deleted": len(deleted), "retention_days": keep_days},
            )
        )

    @dg.job(name="retention_job", description="Deletes the advertiser's plaintext CRM exports past their retention.")
    def retention_job() -> None:
        delete_expired_first_party_exports()

    schedule = dg.ScheduleDefinition(
        name="retention_schedule",
        job=retention_job,
        cron_schedule="30 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return retention_job, schedule


def build_replay_job() -> dg.JobDefinition:
    """replay_job: marks every dead-lettered run for replay; `replay_sensor` then launches one run per record
    through the instance (its run coordinator, pools and run launcher), and clears the records that succeed.
    For an audience upload the replay resumes its ledger, so only the failed Meta batches are sent again."""

    @dg.op(description="Ask for every dead-lettered run to be replayed (replay_sensor launches the runs).")
    def request_replay(context: dg.OpExecutionContext, storage: Storage) -> None:
        store = storage.store()
        requested_at = dt.datetime.now(dt.UTC).isoformat()
        marked = 0
        for obj in list(store.list(layout.DEAD_LETTER_RUNS)):
            entry = json.loads(store.get_bytes(obj.key) or b"{}")
            if entry.get("run_id") and entry.get("assets"):
                store.put_bytes(obj.key, json.dumps({**entry, "replay_requested_at": requested_at}, indent=1).encode())
                marked += 1
        context.log.info(f"replay: {marked} dead-lettered run(s) marked; replay_sensor launches them")

    @dg.job(name="replay_job", description="Replays dead-lettered runs (see dead_letter_sensor and replay_sensor).")
    def replay_job() -> None:
        request_replay()

    return replay_job
