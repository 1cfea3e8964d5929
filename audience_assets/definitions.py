"""The code location: assets, checks, jobs, sensors and resources for this environment.

`AUDIENCE_ASSETS_ENV=local` (the default) keeps everything under `AUDIENCE_DATA_DIR` and seeds the demo
landing zone when it is empty; `aws` uses S3 with SSE-KMS, and AWS Clean Rooms once `CLEANROOMS_MEMBERSHIP_ID`
is set (the local engine until then). With no `META_ACCESS_TOKEN`, uploads go to the built-in Graph API sandbox. Secrets are `dg.EnvVar`s, resolved at run time, never read here.
"""

from __future__ import annotations

import os

import dagster as dg

from audience_assets.assets.activation import build_activation_assets
from audience_assets.assets.clean_room import build_clean_room_assets
from audience_assets.assets.ingest import build_ingest_assets
from audience_assets.assets.reporting import build_reporting_assets
from audience_assets.core.config import ProjectConfig, load_config
from audience_assets.core.demo import ensure_demo_data
from audience_assets.jobs import build_jobs, build_replay_job, build_retention_job
from audience_assets.standins.graph_sandbox import Faults
from audience_assets.resources import AwsCleanRoom, LocalCleanRoom, LocalStorage, MetaAudiences, S3Storage
from audience_assets.resources.metrics import CloudWatch, PrometheusFile
from audience_assets.sensors import build_dead_letter_sensor, build_landing_zone_sensor
from audience_assets.core.settings import SANDBOX_AD_ACCOUNT, SANDBOX_TOKEN, Settings

SANDBOX_STATE = "meta_sandbox/graph.sqlite"
SANDBOX_SETTLE_SECONDS = 20.0  # a demo does not wait ten minutes on a session the sandbox leaves open
METRICS_FILE = "metrics/audience_assets.prom"


def meta_sandbox(settings: Settings, config: ProjectConfig | None) -> bool:
    """Use the built-in Graph API sandbox: no token is configured (META_* for the implicit tenant; with
    tenants.yaml, none of the tenants' token variables is set and none reads a secret)."""
    if config is None or not config.multi_tenant:
        return settings.meta_sandbox
    tenants = [config.tenant(name) for name in config.tenant_names]
    return not any(t.meta_token_secret_id or os.environ.get(t.meta_token_env or "") for t in tenants)


def build_resources(settings: Settings, config: ProjectConfig | None = None) -> dict[str, dg.ConfigurableResource]:
    if settings.env == "aws":
        storage = S3Storage(bucket=dg.EnvVar("AUDIENCE_BUCKET"), kms_key_id=dg.EnvVar("AUDIENCE_KMS_KEY_ID"))
    else:
        storage = LocalStorage(data_dir=str(settings.data_dir))
    if settings.env == "aws" and settings.cleanrooms_membership_set:
        clean_room = AwsCleanRoom(membership_id=dg.EnvVar("CLEANROOMS_MEMBERSHIP_ID"), analysis_template_arn=(
            dg.EnvVar("CLEANROOMS_ANALYSIS_TEMPLATE_ARN") if settings.cleanrooms_template_set else None))
    else:  # no collaboration yet: the local engine enforces the same rules inside the run, over the same store
        clean_room = LocalCleanRoom()
    # the first back-off after a throttle is a fifteenth of the longest wait: 60 s at the default 900 s
    upload = {"api_version": settings.meta_api_version, "upload_deadline_seconds": settings.meta_upload_deadline_seconds,
              "throttle_max_seconds": settings.meta_throttle_max_seconds,
              "throttle_base_seconds": min(60.0, settings.meta_throttle_max_seconds / 15)}
    if meta_sandbox(settings, config):
        Faults.parse(settings.meta_sandbox_faults)  # a bad profile fails here, at load, naming the variable
        meta = MetaAudiences(access_token=SANDBOX_TOKEN, ad_account_id=SANDBOX_AD_ACCOUNT,
                             sandbox_state=str(settings.data_dir / SANDBOX_STATE), sandbox_faults=settings.meta_sandbox_faults,
                             settle_seconds=SANDBOX_SETTLE_SECONDS, **upload)
    elif config is not None and config.multi_tenant:  # each tenant brings its ad account and token variable
        meta = MetaAudiences(app_secret=dg.EnvVar("META_APP_SECRET") if settings.app_secret_set else None,
                             graph_url=settings.meta_graph_url, **upload)
    else:
        token = ({"access_token_secret_id": dg.EnvVar("META_ACCESS_TOKEN_SECRET_ID")} if settings.meta_token_secret_set
                 else {"access_token": dg.EnvVar("META_ACCESS_TOKEN")})
        meta = MetaAudiences(**token, ad_account_id=dg.EnvVar("META_AD_ACCOUNT_ID"),
                             app_secret=dg.EnvVar("META_APP_SECRET") if settings.app_secret_set else None,
                             graph_url=settings.meta_graph_url, **upload)
    metrics = (CloudWatch(namespace=settings.metrics_namespace) if settings.env == "aws"
               else PrometheusFile(path=str(settings.data_dir / METRICS_FILE)))
    return {"storage": storage, "clean_room": clean_room, "meta": meta, "metrics": metrics}


def build_assets(config: ProjectConfig, settings: Settings) -> list[dg.AssetsDefinition]:
    storage_kind = "s3" if settings.env == "aws" else "parquet"
    partner_data, first_party_customers, suppression_list = build_ingest_assets(config, storage_kind)
    first_party_table, clean_room_matches = build_clean_room_assets(config, storage_kind, first_party_customers, partner_data)
    activation = [asset for tenant in config.tenant_names for asset in build_activation_assets(
        config, storage_kind, clean_room_matches, first_party_customers, suppression_list, tenant)]
    measured = [partner_data, first_party_customers, suppression_list, first_party_table, clean_room_matches, *activation]
    return [*measured, *build_reporting_assets(config, measured)]


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    config = load_config(settings.config_dir)
    if settings.env == "local" and settings.demo_data:
        ensure_demo_data(settings.data_dir)
    assets = build_assets(config, settings)
    jobs = build_jobs(assets[0])
    resources = build_resources(settings, config)
    retention_job, retention_schedule = build_retention_job(config, settings.retention_days)
    automation = dg.AutomationConditionSensorDefinition(
        "audience_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        description="Materializes downstream assets when new data lands, and refreshes audiences daily.")
    return dg.Definitions(assets=assets, jobs=[*jobs, retention_job, build_replay_job(assets, resources)],
                          sensors=[build_landing_zone_sensor(config, jobs), build_dead_letter_sensor(), automation],
                          schedules=[retention_schedule], resources=resources)


defs = build_definitions()
