"""The operations stage's definitions: retention, dead letters and their replay."""

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.defs.operations.jobs import build_replay_job, build_retention_job
from audience_assets.defs.operations.sensors import build_dead_letter_sensor, build_replay_sensor


def assets_of_step(assets: list[dg.AssetsDefinition]) -> dict[str, list[str]]:
    """Step (op) name -> the assets it materializes: one step may write several (audience_selection)."""
    return {a.node_def.name: sorted(k.to_user_string() for k in a.keys) for a in assets if a.is_executable}


def build(config: ProjectConfig, retention_days: int, assets: list[dg.AssetsDefinition]) -> dg.Definitions:
    """`assets`: what a replay may materialize again; one replay job per partitions definition among them (a run
    materializes assets of one partitions definition)."""
    names = {
        (): "replay_unpartitioned",
        tuple(sorted(config.partners)): "replay_partners",
        **{
            tuple(config.audiences_of(t)): f"replay_{t}_audiences" if config.multi_tenant else "replay_audiences"
            for t in config.tenant_names
            if config.audiences_of(t)
        },
        **{
            tuple(k for keys in config.lookalikes_of(t).values() for k in keys): f"replay_{t}_lookalikes"
            if config.multi_tenant
            else "replay_lookalikes"
            for t in config.tenant_names
            if config.lookalikes_of(t)
        },
    }
    groups: dict[str, list[dg.AssetKey]] = {}
    for asset in assets:
        partitions = tuple(asset.partitions_def.get_partition_keys()) if asset.partitions_def else ()
        groups.setdefault(names[partitions], []).extend(asset.keys)
    replay_jobs = [
        dg.define_asset_job(name, selection=keys, description="Replays dead-lettered runs of these assets.")
        for name, keys in sorted(groups.items())
    ]
    job_of = {key.to_user_string(): name for name, keys in groups.items() for key in keys}
    retention_job, retention_schedule = build_retention_job(config, retention_days)
    return dg.Definitions(
        jobs=[retention_job, build_replay_job(), *replay_jobs],
        schedules=[retention_schedule],
        sensors=[build_dead_letter_sensor(assets_of_step(assets)), build_replay_sensor(job_of, replay_jobs)],
    )
