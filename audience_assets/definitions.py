"""The code location, built when Dagster loads it (never at import, and writing nothing): every stage's
definitions from the configuration, the resources this environment chose, and one shared policy applied to
every asset. In local mode the demo data reaches an empty landing zone through the landing-zone sensor's first
tick, the headless run, or `python -m audience_assets demo`.

`AUDIENCE_ASSETS_ENV=local` (the default) keeps everything under `AUDIENCE_DATA_DIR`; `aws` uses S3 with
SSE-KMS, and AWS Clean Rooms once `CLEANROOMS_MEMBERSHIP_ID` is set (the local engine until then). With no
`META_ACCESS_TOKEN`, uploads go to the built-in Graph API sandbox. Secrets are `dg.EnvVar`s, resolved at run
time, never read here.
"""

from __future__ import annotations

import warnings

import dagster as dg

from audience_assets.core.config import load_config
from audience_assets.core.settings import Settings
from audience_assets.defs.activation import definitions as activation
from audience_assets.defs.clean_room import definitions as clean_room
from audience_assets.defs.ingest import definitions as ingest
from audience_assets.defs.operations import definitions as operations
from audience_assets.defs.reporting import definitions as reporting
from audience_assets.defs.resources import build_resources

OWNERS = ["team:marketing-data"]


def apply_policy(spec: dg.AssetSpec) -> dg.AssetSpec:
    """What every asset carries, in one place: its owners, and its stage (group) as a tag to select by."""
    return spec.replace_attributes(owners=[*OWNERS, *(o for o in spec.owners if o not in OWNERS)]).merge_attributes(
        tags={"stage": spec.group_name or "default"}
    )


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    config = load_config(settings.config_dir)
    storage_kind = "s3" if settings.env == "aws" else "parquet"
    demo_dir = settings.data_dir if settings.env == "local" and settings.demo_data else None  # seeded by the sensor
    stages = dg.Definitions.merge(
        ingest.build(
            config,
            storage_kind,
            demo_dir,
            settings.inflation,
            settings.landing_queue_url,
            settings.landing_sweep_seconds,
        ),
        clean_room.build(config, storage_kind),
        activation.build(config, storage_kind),
    )
    measured = [key for asset in stages.assets or [] for key in asset.keys]
    automation = dg.AutomationConditionSensorDefinition(
        "audience_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Materializes downstream assets when new data lands, and refreshes audiences daily.",
    )
    merged = dg.Definitions.merge(
        stages,
        reporting.build(config, measured),
        operations.build(config, settings.retention_days, list(stages.assets or [])),
        dg.Definitions(sensors=[automation], resources=build_resources(settings, config)),
    )
    with warnings.catch_warnings():  # map_asset_specs is preview in 1.13: the one place policy is applied, on purpose
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return merged.map_asset_specs(func=apply_policy)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
