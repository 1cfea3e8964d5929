"""The deployment's settings, read from the environment once when definitions are built.

Only choices that shape the definitions are read here (local or aws, which stand-ins to use);
secret values are never read: resources receive them as `dg.EnvVar`, resolved at run time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from audience_assets.core.meta.client import DEFAULT_API_VERSION, DEFAULT_GRAPH_URL

SANDBOX_TOKEN = "sandbox-token"
SANDBOX_AD_ACCOUNT = "act_1000000001"


@dataclasses.dataclass(frozen=True)
class Settings:
    env: str = "local"
    data_dir: Path = Path(".audience_data")
    config_dir: Path | None = None
    meta_token_set: bool = False
    meta_token_secret_set: bool = False  # META_ACCESS_TOKEN_SECRET_ID: the token lives in AWS Secrets Manager
    app_secret_set: bool = False
    retention_days: int = 30
    meta_graph_url: str = DEFAULT_GRAPH_URL
    meta_api_version: str = DEFAULT_API_VERSION
    meta_ad_account_id: str | None = None
    demo_data: bool = True
    metrics_namespace: str = "AudienceAssets"  # AUDIENCE_METRICS_NAMESPACE: CloudWatch namespace (aws mode)
    cleanrooms_membership_set: bool = False  # CLEANROOMS_MEMBERSHIP_ID: aws mode matches in AWS Clean Rooms
    cleanrooms_template_set: bool = False  # CLEANROOMS_ANALYSIS_TEMPLATE_ARN: the default audience_match template
    meta_upload_deadline_seconds: float = (
        3600.0  # META_UPLOAD_DEADLINE_SECONDS: an upload gives up (dead letters) after
    )
    meta_throttle_max_seconds: float = 900.0  # META_THROTTLE_MAX_SECONDS: the longest single wait on Meta
    meta_sandbox_faults: str = ""  # META_SANDBOX_FAULTS: the built-in sandbox misbehaves like Meta (see Faults.parse)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        mode = env.get("AUDIENCE_ASSETS_ENV", "local").strip().lower() or "local"
        if mode not in ("local", "aws"):
            raise ValueError(f"AUDIENCE_ASSETS_ENV must be 'local' or 'aws', not {mode!r}")
        return cls(
            env=mode,
            data_dir=Path(env.get("AUDIENCE_DATA_DIR") or ".audience_data").expanduser().absolute(),
            config_dir=Path(env["AUDIENCE_CONFIG_DIR"]).expanduser() if env.get("AUDIENCE_CONFIG_DIR") else None,
            meta_token_set=bool(env.get("META_ACCESS_TOKEN")),
            meta_token_secret_set=bool(env.get("META_ACCESS_TOKEN_SECRET_ID")),
            retention_days=int(env.get("AUDIENCE_RETENTION_DAYS") or 30),
            app_secret_set=bool(env.get("META_APP_SECRET")),
            meta_graph_url=env.get("META_GRAPH_URL") or DEFAULT_GRAPH_URL,
            meta_api_version=env.get("META_API_VERSION") or DEFAULT_API_VERSION,
            meta_ad_account_id=env.get("META_AD_ACCOUNT_ID") or None,
            cleanrooms_membership_set=bool(env.get("CLEANROOMS_MEMBERSHIP_ID")),
            cleanrooms_template_set=bool(env.get("CLEANROOMS_ANALYSIS_TEMPLATE_ARN")),
            metrics_namespace=env.get("AUDIENCE_METRICS_NAMESPACE") or "AudienceAssets",
            demo_data=(env.get("AUDIENCE_DEMO_DATA", "1").strip().lower() not in ("0", "false", "no")),
            meta_upload_deadline_seconds=_number(env, "META_UPLOAD_DEADLINE_SECONDS", 3600.0, low=60.0, high=86400.0),
            meta_throttle_max_seconds=_number(env, "META_THROTTLE_MAX_SECONDS", 900.0, low=1.0, high=3600.0),
            meta_sandbox_faults=env.get("META_SANDBOX_FAULTS", "").strip(),
        )

    @property
    def meta_sandbox(self) -> bool:
        """No token configured: talk to the built-in Graph API sandbox."""
        return not (self.meta_token_set or self.meta_token_secret_set)


def _number(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    """A number of seconds from `name`, or `default`; anything else fails naming the variable and the range."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; expected seconds from {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r} is out of range; expected seconds from {low:g} to {high:g}")
    return value
