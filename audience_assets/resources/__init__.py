"""Thin Dagster adapters that choose an engine: storage (local | S3), clean room, Meta, metrics."""

from audience_assets.resources.clean_room import AwsCleanRoom, CleanRoom, LocalCleanRoom
from audience_assets.resources.meta import MetaAudiences
from audience_assets.resources.storage import LocalStorage, S3Storage, Storage

__all__ = ["AwsCleanRoom", "CleanRoom", "LocalCleanRoom", "LocalStorage", "MetaAudiences", "S3Storage", "Storage"]
