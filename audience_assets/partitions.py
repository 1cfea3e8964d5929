"""Partitions, defined once from the configuration and shared by assets, checks and sensors."""

from __future__ import annotations

import dagster as dg

from audience_assets.config import ProjectConfig


def partner_partitions(config: ProjectConfig) -> dg.StaticPartitionsDefinition:
    """One partition per partner declared in partners.yaml."""
    return dg.StaticPartitionsDefinition(sorted(config.partners))


def audience_partitions(config: ProjectConfig) -> dg.StaticPartitionsDefinition:
    """One partition per audience declared in audiences.yaml."""
    return dg.StaticPartitionsDefinition(sorted(config.audiences))


def partner_to_audiences(config: ProjectConfig) -> dg.StaticPartitionMapping:
    """Each partner's matches feed the audiences that select it."""
    return dg.StaticPartitionMapping({partner: {a for a, spec in config.audiences.items() if partner in spec.select}
                                      for partner in config.partners})
