"""Partitions, defined once from the configuration and shared by assets, checks and sensors."""

from __future__ import annotations

import dagster as dg

from audience_assets.core.config import ProjectConfig


def partner_partitions(config: ProjectConfig) -> dg.StaticPartitionsDefinition:
    """One partition per partner declared in partners.yaml."""
    return dg.StaticPartitionsDefinition(sorted(config.partners))


def audience_partitions(config: ProjectConfig, tenant: str) -> dg.StaticPartitionsDefinition:
    """One partition per audience of `tenant` declared in audiences.yaml."""
    return dg.StaticPartitionsDefinition(config.audiences_of(tenant))


def lookalike_partitions(config: ProjectConfig, tenant: str) -> dg.StaticPartitionsDefinition:
    """One partition per lookalike of `tenant`'s audiences (`<audience>.<country>-<size>`)."""
    return dg.StaticPartitionsDefinition([key for keys in config.lookalikes_of(tenant).values() for key in keys])


def partner_to_audiences(config: ProjectConfig, tenant: str) -> dg.StaticPartitionMapping:
    """Each of the tenant's partners' matches feed the tenant's audiences that select it."""
    audiences = config.audiences_of(tenant)
    return dg.StaticPartitionMapping(
        {
            partner: {a for a in audiences if partner in config.audiences[a].select}
            for partner in config.partners
            if config.tenant_of_partner(partner) == tenant
        }
    )
