"""The clean-room stage's definitions: the first-party table and each partner's match."""

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.defs.clean_room.assets import build_clean_room_assets


def build(config: ProjectConfig, storage_kind: str) -> dg.Definitions:
    return dg.Definitions(assets=build_clean_room_assets(config, storage_kind))
