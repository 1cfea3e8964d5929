"""Jobs: the ingestion jobs the sensors launch (one per kind of delivery), the retention cleanup, and
the replay of dead-lettered runs."""

import json

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.retention import delete_expired_exports
from audience_assets.resources.storage import Storage

PARTNER_DATA_JOB = "partner_data_job"
FIRST_PARTY_JOB = "first_party_job"
SUPPRESSION_JOB = "suppression_job"


def build_jobs(partner_data: dg.AssetsDefinition) -> list:  # of unresolved asset jobs
    return [
        dg.define_asset_job(PARTNER_DATA_JOB, selection=[partner_data],
                            description="Ingest one partner's delivery (launched by landing_zone_sensor)."),
        dg.define_asset_job(FIRST_PARTY_JOB, selection=["first_party_customers"],
                            description="Ingest the CRM export (launched by landing_zone_sensor)."),
        dg.define_asset_job(SUPPRESSION_JOB, selection=["suppression_list"],
                            description="Ingest opt-out files (launched by landing_zone_sensor)."),
    ]


def build_retention_job(config: ProjectConfig, keep_days: int) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """A daily job deleting CRM exports older than `keep_days` (AUDIENCE_RETENTION_DAYS)."""
    prefix = config.sources.first_party_prefix

    @dg.op(description=f"Delete first-party exports under {prefix} older than {keep_days} days.")
    def delete_expired_first_party_exports(context: dg.OpExecutionContext, storage: Storage) -> None:
        deleted = delete_expired_exports(storage.store(), prefix, keep_days=keep_days)
        context.log.info(f"retention: {len(deleted)} export(s) older than {keep_days} days deleted")
        context.log_event(dg.AssetObservation(asset_key="first_party_customers",
                                              metadata={"exports_deleted": len(deleted), "retention_days": keep_days}))

    @dg.job(name="retention_job", description="Deletes the advertiser's plaintext CRM exports past their retention.")
    def retention_job() -> None:
        delete_expired_first_party_exports()

    schedule = dg.ScheduleDefinition(name="retention_schedule", job=retention_job, cron_schedule="30 3 * * *",
                                     execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)
    return retention_job, schedule


def build_replay_job(assets: list[dg.AssetsDefinition], resources: dict) -> dg.JobDefinition:
    """replay_job: materializes again what each dead-lettered run failed to, and clears the entries that
    now succeed. For an audience upload this resumes its ledger, so failed Meta batches are sent again."""
    @dg.op(description="Re-run the assets of every dead-lettered run; clear the entries that succeed.")
    def replay_dead_letters(context: dg.OpExecutionContext, storage: Storage) -> None:
        replayed = cleared = 0
        store = storage.store()
        for obj in list(store.list(layout.DEAD_LETTER_RUNS)):
            entry = json.loads(store.get_bytes(obj.key) or b"{}")
            selection = [a for a in entry.get("assets", []) if any(a == k.to_user_string() for d in assets for k in d.keys)]
            if not selection:
                continue
            replayed += 1
            result = dg.materialize(assets, selection=selection, partition_key=entry.get("partition"),
                                    resources=resources, instance=context.instance, raise_on_error=False,
                                    tags={"audience_assets/replay_of": entry["run_id"]})
            if result.success:
                store.delete(obj.key)
                cleared += 1
            context.log.info(f"replay of run {entry['run_id']} ({', '.join(selection)}): "
                             f"{'succeeded' if result.success else 'failed again'}")
        context.log.info(f"replay: {replayed} dead-lettered run(s) replayed, {cleared} cleared")

    @dg.job(name="replay_job", description="Replays dead-lettered runs (see dead_letter_sensor).")
    def replay_job() -> None:
        replay_dead_letters()

    return replay_job
