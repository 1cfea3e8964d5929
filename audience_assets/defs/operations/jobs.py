"""Operations' jobs: the retention cleanup (daily) and `replay_job`, which asks for every dead-lettered run to be
replayed (`replay_sensor` launches the runs)."""

import datetime as dt
import json

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.retention import apply_retention
from audience_assets.defs.resources import Storage


def build_retention_job(config: ProjectConfig, keep_days: int) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """A daily job deleting the landing zone's plaintext past retention (`core.ingestion.retention`)."""

    @dg.op(description=f"Delete plaintext landing files past their retention (default {keep_days} days).")
    def delete_expired_plaintext(context: dg.OpExecutionContext, storage: Storage) -> None:
        report = apply_retention(storage.store(), config, default_days=keep_days)
        for key in report.deleted:
            context.log.info(f"retention: deleted {key}")
        for key, why in sorted(report.kept.items()):
            context.log.info(f"retention: kept {key} past its retention: {why}")
        for key, why in sorted(report.failed.items()):
            context.log.warning(f"retention: could not delete {key}: {why}")
        context.log.info(
            f"retention: {len(report.deleted)} file(s) deleted, {len(report.kept)} kept past retention, "
            f"{len(report.failed)} could not be deleted, {report.opt_outs_hashed} hashed opt-outs archived"
        )
        context.log_event(
            dg.AssetObservation(
                asset_key="landing_zone_report",
                metadata={
                    "retention/deleted": len(report.deleted),
                    "retention/kept_past_retention": len(report.kept),
                    "retention/failed": len(report.failed),
                    "retention/opt_outs_archived": report.opt_outs_hashed,
                    "retention/default_days": keep_days,
                    "retention/deleted_keys": dg.MetadataValue.md(
                        "\n".join(f"- `{k}`" for k in report.deleted) or "_nothing past retention_"
                    ),
                },
            )
        )
        if report.failed:  # the rest was deleted; the run fails so the dead letters and alerts see it
            raise dg.Failure(f"retention could not delete {len(report.failed)} file(s): {sorted(report.failed)}")

    @dg.job(name="retention_job", description="Deletes the landing zone's plaintext files past their retention.")
    def retention_job() -> None:
        delete_expired_plaintext()

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
