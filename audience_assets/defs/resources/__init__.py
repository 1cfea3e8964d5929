"""Thin Dagster adapters that choose an engine for this deployment: storage (local | S3), the clean room
(local engine | AWS Clean Rooms), Meta (the built-in sandbox | the Graph API) and metrics (a Prometheus file |
CloudWatch). Secrets are `dg.EnvVar`s, resolved at run time, never read when definitions load."""

from __future__ import annotations

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.core.meta.client import DEFAULT_API_VERSION
from audience_assets.core.settings import SANDBOX_AD_ACCOUNT, SANDBOX_TOKEN, Settings, token_variable
from audience_assets.defs.resources.clean_room import AwsCleanRoom, CleanRoom, LocalCleanRoom
from audience_assets.defs.resources.meta import MetaAudiences
from audience_assets.defs.resources.metrics import CloudWatch, Metrics, PrometheusFile
from audience_assets.defs.resources.storage import LocalStorage, S3Storage, Storage
from audience_assets.standins.graph_sandbox import Faults

__all__ = [
    "AwsCleanRoom",
    "CleanRoom",
    "CloudWatch",
    "LocalCleanRoom",
    "LocalStorage",
    "MetaAudiences",
    "Metrics",
    "PrometheusFile",
    "S3Storage",
    "Storage",
    "build_resources",
]

SANDBOX_STATE = "meta_sandbox/graph.sqlite"
METRICS_FILE = "metrics/audience_assets.prom"


def meta_sandbox(settings: Settings, config: ProjectConfig | None) -> bool:
    """Use the built-in Graph API sandbox: no token is configured (META_* for the implicit tenant; with
    tenants.yaml, none of the tenants' token variables is set and none reads a secret)."""
    if config is None or not config.multi_tenant:
        return settings.meta_sandbox
    tenants = [config.tenant(name) for name in config.tenant_names]
    return not any(t.meta_token_secret_id or token_variable(t.meta_token_env or "") for t in tenants)


def build_resources(settings: Settings, config: ProjectConfig | None = None) -> dict[str, dg.ConfigurableResource]:
    if settings.env == "aws":
        storage = S3Storage(
            bucket=dg.EnvVar("AUDIENCE_BUCKET"),
            kms_key_id=dg.EnvVar("AUDIENCE_KMS_KEY_ID"),
            lock_wait_seconds=settings.lock_wait_seconds,
        )
    else:
        storage = LocalStorage(data_dir=str(settings.data_dir), lock_wait_seconds=settings.lock_wait_seconds)
    if settings.env == "aws" and settings.cleanrooms_membership_set:
        clean_room = AwsCleanRoom(
            membership_id=dg.EnvVar("CLEANROOMS_MEMBERSHIP_ID"), results_bucket=dg.EnvVar("AUDIENCE_RESULTS_BUCKET")
        )
    else:  # no collaboration yet: the local engine enforces the same rules inside the run, over the same store
        clean_room = LocalCleanRoom()
    upload = {
        "api_version": settings.meta_api_version or DEFAULT_API_VERSION,
        "upload_deadline_seconds": settings.meta.deadline_seconds,
        "throttle_max_seconds": settings.meta.throttle_max_seconds,
    }
    if meta_sandbox(settings, config):
        Faults.parse(settings.meta_sandbox_faults)  # a bad profile fails here, at load, naming the variable
        meta = MetaAudiences(
            access_token=SANDBOX_TOKEN,
            ad_account_id=SANDBOX_AD_ACCOUNT,
            sandbox_state=str(settings.data_dir / SANDBOX_STATE),
            sandbox_faults=settings.meta_sandbox_faults,
            **upload,
        )
    elif config is not None and config.multi_tenant:  # each tenant brings its ad account and token variable
        meta = MetaAudiences(
            app_secret=dg.EnvVar("META_APP_SECRET") if settings.app_secret_set else None,
            graph_url=settings.meta_graph_url,
            **upload,
        )
    else:
        token = (
            {"access_token_secret_id": dg.EnvVar("META_ACCESS_TOKEN_SECRET_ID")}
            if settings.meta_token_secret_set
            else {"access_token": dg.EnvVar("META_ACCESS_TOKEN")}
        )
        meta = MetaAudiences(
            **token,
            ad_account_id=dg.EnvVar("META_AD_ACCOUNT_ID"),
            app_secret=dg.EnvVar("META_APP_SECRET") if settings.app_secret_set else None,
            graph_url=settings.meta_graph_url,
            **upload,
        )
    metrics = (
        CloudWatch(namespace=settings.metrics_namespace)
        if settings.env == "aws"
        else PrometheusFile(path=str(settings.data_dir / METRICS_FILE))
    )
    return {"storage": storage, "clean_room": clean_room, "meta": meta, "metrics": metrics}
