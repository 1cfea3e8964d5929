"""Thin Dagster adapters over the engines: storage (local | S3), clean room, Meta."""

from audience_assets.resources.clean_room import AwsCleanRoom, CleanRoom, LocalCleanRoom, MatchResult
from audience_assets.resources.meta import MetaAudiences
from audience_assets.resources.storage import LocalStorage, S3Storage, Storage, StoredObject

__all__ = ["AwsCleanRoom", "CleanRoom", "LocalCleanRoom", "LocalStorage", "MatchResult", "MetaAudiences", "S3Storage", "Storage", "StoredObject"]
