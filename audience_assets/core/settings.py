"""The deployment's settings, read from the environment once when definitions are built.

Only choices that shape the definitions are read here (local or aws, which stand-ins to use);
secret values are never read: resources receive them as `dg.EnvVar`, resolved at run time. Every value is
validated here, at load: a bad one fails with the variable's name, what is wrong and what is accepted, so
nothing (least of all retention, which deletes) runs on a value nobody meant.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

from audience_assets.core.meta.client import DEFAULT_API_VERSION, DEFAULT_GRAPH_URL

SANDBOX_TOKEN = "sandbox-token"
SANDBOX_AD_ACCOUNT = "act_1000000001"
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class SettingsError(ValueError):
    """An environment variable holds a value the project cannot use; the message names it and the range."""


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
    meta_upload_deadline_seconds: float = (
        3600.0  # META_UPLOAD_DEADLINE_SECONDS: an upload gives up (dead letters) after
    )
    meta_throttle_max_seconds: float = 900.0  # META_THROTTLE_MAX_SECONDS: the longest single wait on Meta
    meta_sandbox_faults: str = ""  # META_SANDBOX_FAULTS: the built-in sandbox misbehaves like Meta (see Faults.parse)
    lock_wait_seconds: float = 120.0  # AUDIENCE_LOCK_WAIT_SECONDS: a step waits this long for another run's lock
    max_inflated_bytes: int = 64 * 2**30  # AUDIENCE_MAX_INFLATED_BYTES: a compressed delivery inflates to at most
    max_inflation_ratio: float = 100.0  # AUDIENCE_MAX_INFLATION_RATIO: ... and at most this many times its size
    landing_queue_url: str = ""  # AUDIENCE_LANDING_QUEUE_URL (aws mode): drain landing events instead of listing
    landing_sweep_seconds: float = 3600.0  # AUDIENCE_LANDING_SWEEP_SECONDS: how often events are checked by a listing

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        mode = env.get("AUDIENCE_ASSETS_ENV", "local").strip().lower() or "local"
        if mode not in ("local", "aws"):
            raise SettingsError(f"AUDIENCE_ASSETS_ENV={mode!r} is not a mode; expected 'local' or 'aws'")
        _check_optional(env)
        _check_clean_room(env, mode)
        return cls(
            env=mode,
            data_dir=Path(env.get("AUDIENCE_DATA_DIR") or ".audience_data").expanduser().absolute(),
            config_dir=Path(env["AUDIENCE_CONFIG_DIR"]).expanduser() if env.get("AUDIENCE_CONFIG_DIR") else None,
            meta_token_set=bool(env.get("META_ACCESS_TOKEN")),
            meta_token_secret_set=bool(env.get("META_ACCESS_TOKEN_SECRET_ID")),
            retention_days=int(_number(env, "AUDIENCE_RETENTION_DAYS", 30, low=0, high=3650, unit="days", whole=True)),
            app_secret_set=bool(env.get("META_APP_SECRET")),
            meta_graph_url=_matching(env, "META_GRAPH_URL", r"https?://[^\s/?#]+[^\s?#]*", "an http(s) URL")
            or DEFAULT_GRAPH_URL,
            meta_api_version=_matching(env, "META_API_VERSION", r"v\d{1,3}\.0", "a Graph API version such as v25.0")
            or DEFAULT_API_VERSION,
            meta_ad_account_id=_matching(env, "META_AD_ACCOUNT_ID", r"act_\d{1,20}", "act_ followed by digits") or None,
            cleanrooms_membership_set=bool(env.get("CLEANROOMS_MEMBERSHIP_ID")),
            metrics_namespace=env.get("AUDIENCE_METRICS_NAMESPACE") or "AudienceAssets",
            demo_data=_flag(env, "AUDIENCE_DEMO_DATA", True),
            meta_upload_deadline_seconds=_number(env, "META_UPLOAD_DEADLINE_SECONDS", 3600.0, low=60.0, high=86400.0),
            meta_throttle_max_seconds=_number(env, "META_THROTTLE_MAX_SECONDS", 900.0, low=1.0, high=3600.0),
            meta_sandbox_faults=env.get("META_SANDBOX_FAULTS", "").strip(),
            lock_wait_seconds=_number(env, "AUDIENCE_LOCK_WAIT_SECONDS", 120.0, low=0.0, high=86400.0),
            max_inflated_bytes=int(
                _number(env, "AUDIENCE_MAX_INFLATED_BYTES", 64 * 2**30, low=2**20, high=2**50, unit="bytes", whole=True)
            ),
            max_inflation_ratio=_number(
                env, "AUDIENCE_MAX_INFLATION_RATIO", 100.0, low=2.0, high=100_000.0, unit="times"
            ),
            landing_queue_url=_landing_queue(env, mode),
            landing_sweep_seconds=_number(env, "AUDIENCE_LANDING_SWEEP_SECONDS", 3600.0, low=60.0, high=86400.0),
        )

    @property
    def meta_sandbox(self) -> bool:
        """No token configured: talk to the built-in Graph API sandbox."""
        return not (self.meta_token_set or self.meta_token_secret_set)


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    low: float,
    high: float,
    unit: str = "seconds",
    whole: bool = False,
) -> float:
    """A number from `name`, or `default` when unset; anything else fails naming the variable and the range."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    accepted = f"expected {'whole ' if whole else ''}{unit} from {low:g} to {high:g}"
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {'whole ' if whole else ''}number; {accepted}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r} is out of range; {accepted}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in _FLAGS:
        raise SettingsError(f"{name}={raw!r} is not a switch; expected 1/0, true/false, yes/no or on/off")
    return _FLAGS[raw]


def _matching(env: Mapping[str, str], name: str, pattern: str, accepted: str) -> str:
    raw = env.get(name, "").strip()
    if raw and not re.fullmatch(pattern, raw):
        shown = f"{raw[:40]!r}" if "URL" not in name else "the value"
        raise SettingsError(f"{name}: {shown} is not {accepted}")
    return raw


def _landing_queue(env: Mapping[str, str], mode: str) -> str:
    url = _matching(env, "AUDIENCE_LANDING_QUEUE_URL", r"https?://\S+", "an SQS queue URL")
    if url and mode != "aws":
        raise SettingsError(
            "AUDIENCE_LANDING_QUEUE_URL is set in local mode: landing events come from S3 (aws mode); unset it"
        )
    return url


def _check_clean_room(env: Mapping[str, str], mode: str) -> None:
    """AWS Clean Rooms runs Spark only (since 2025-12-17), and on Spark the results bucket may hold no data source:
    with a membership configured, results need a bucket of their own."""
    if env.get("CLEANROOMS_ANALYSIS_TEMPLATE_ARN"):
        raise SettingsError(
            "CLEANROOMS_ANALYSIS_TEMPLATE_ARN is no longer read: one template cannot serve every partner. Each "
            "partner's templates are found by name in the membership (audience_match-<partner>, created by the "
            "stack) or set per partner in partners.yaml (clean_room.match_template_arn); unset the variable"
        )
    if mode != "aws" or not env.get("CLEANROOMS_MEMBERSHIP_ID"):
        return
    results, data = env.get("AUDIENCE_RESULTS_BUCKET", "").strip(), env.get("AUDIENCE_BUCKET", "").strip()
    if not results:
        raise SettingsError(
            "AUDIENCE_RESULTS_BUCKET is not set: with CLEANROOMS_MEMBERSHIP_ID, Clean Rooms (Spark) writes results "
            "to a bucket that holds no data source; set the results bucket the stack created"
        )
    if results == data:
        raise SettingsError(
            f"AUDIENCE_RESULTS_BUCKET={results!r} is AUDIENCE_BUCKET, which holds the clean-room tables: on the Spark "
            "engine the results destination can't be within the same S3 bucket as any data source; use the "
            "results bucket the stack created"
        )


def _check_optional(env: Mapping[str, str]) -> None:
    """Variables read elsewhere (DuckDB, the alert sensor): validated here so a bad one fails at load."""
    _matching(env, "AUDIENCE_DUCKDB_MEMORY_LIMIT", r"\d+(\.\d+)?\s*([KMGT]i?B)", "a size such as 1.5GB or 800MiB")
    _number(env, "AUDIENCE_DUCKDB_THREADS", 0, low=1, high=256, unit="threads", whole=True)
    _matching(env, "ALERT_WEBHOOK_URL", r"https?://\S+", "an http(s) URL")
