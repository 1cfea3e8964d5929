"""The activation stage's definitions: every tenant's audience members, chunks and Meta audiences."""

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.defs.activation.assets import Shape, chunks_asset, members_asset
from audience_assets.defs.activation.meta_audience import meta_audience_definitions
from audience_assets.defs.partitions import audience_partitions


def build_activation_assets(
    config: ProjectConfig, storage_kind: str, tenant: str
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The activation assets of one tenant: under the tenant's key prefix once tenants are declared. A tenant
    being onboarded may have no audiences yet: its partners' data is ingested and matched, nothing activated."""
    if not config.audiences_of(tenant):
        return []
    shape = Shape(
        config, tenant, audience_partitions(config, tenant), [tenant] if config.multi_tenant else [], storage_kind
    )
    return [members_asset(shape), chunks_asset(shape), *meta_audience_definitions(shape)]


def build(config: ProjectConfig, storage_kind: str) -> dg.Definitions:
    built = [d for tenant in config.tenant_names for d in build_activation_assets(config, storage_kind, tenant)]
    return dg.Definitions(
        assets=[d for d in built if isinstance(d, dg.AssetsDefinition) and not isinstance(d, dg.AssetChecksDefinition)],
        asset_checks=[d for d in built if isinstance(d, dg.AssetChecksDefinition)],
    )
