"""The activation stage's definitions: every tenant's audience members, chunks and Meta audiences."""

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.defs.activation.assets import build_activation_assets


def build(config: ProjectConfig, storage_kind: str) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            asset for tenant in config.tenant_names for asset in build_activation_assets(config, storage_kind, tenant)
        ]
    )
