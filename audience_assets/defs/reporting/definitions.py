"""The reporting stage's definitions: the cost per tenant and day."""

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.defs.reporting.assets import build_reporting_assets


def build(config: ProjectConfig, measured: list[dg.AssetKey]) -> dg.Definitions:
    return dg.Definitions(assets=build_reporting_assets(config, measured))
