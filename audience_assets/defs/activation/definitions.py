"""The activation stage's definitions: every tenant's audience members, chunks, Meta audiences and lookalikes, and
the schedules that refresh each audience on its own `refresh_cron`."""

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.defs.activation.assets import Shape, chunks_asset, members_asset
from audience_assets.defs.activation.lookalikes import lookalike_definitions
from audience_assets.defs.activation.meta_audience import meta_audience_definitions
from audience_assets.defs.activation.schedules import refresh_schedules
from audience_assets.defs.partitions import audience_partitions


def build(config: ProjectConfig, storage_kind: str) -> dg.Definitions:
    """Each tenant's activation assets, under the tenant's key prefix once tenants are declared. A tenant being
    onboarded may have no audiences yet: its partners' data is ingested and matched, nothing activated."""
    built: list[dg.AssetsDefinition] = []
    jobs, schedules = [], []
    for tenant in config.tenant_names:
        if not config.audiences_of(tenant):
            continue
        prefix = [tenant] if config.multi_tenant else []
        shape = Shape(config, tenant, audience_partitions(config, tenant), prefix, storage_kind)
        built += [members_asset(shape), chunks_asset(shape), *meta_audience_definitions(shape)]
        built += lookalike_definitions(shape)
        tenant_jobs, tenant_schedules = refresh_schedules(shape)
        jobs += tenant_jobs
        schedules += tenant_schedules
    return dg.Definitions(
        assets=[d for d in built if isinstance(d, dg.AssetsDefinition) and not isinstance(d, dg.AssetChecksDefinition)],
        asset_checks=[d for d in built if isinstance(d, dg.AssetChecksDefinition)],
        jobs=jobs,
        schedules=schedules,
    )
