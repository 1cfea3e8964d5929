"""The deployment's settings: the one place the process environment is read.

`Settings.from_env` reads, once when definitions are built, the choices that shape the definitions (local or aws,
which stand-ins to use) and builds the engines' policies (`core.policies`) from their variables; the few values
read later, where they are used (DuckDB's limits, the scratch root, a tenant's token variable, the alert webhook),
are read by the functions below, never by `os.environ` elsewhere. `VARIABLES` declares every variable the project
reads: the documentation and the test harness (which clears them all) derive from it. Secret values are never
read at load: resources receive them as `dg.EnvVar`, resolved at run time. Every value is validated here, at
load: a bad one fails with the variable's name, what is wrong and what is accepted, so nothing (least of all
retention, which deletes) runs on a value nobody meant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from audience_assets.core.graph_api import DEFAULT_GRAPH_URL
from audience_assets.core.policies import (
    LANDING_SWEEP_SECONDS,
    LOCK_WAIT_SECONDS,
    METRICS_NAMESPACE,
    RETENTION_DAYS,
    InflationLimits,
    MetaPolicy,
)

SANDBOX_TOKEN = "sandbox-token"
SANDBOX_AD_ACCOUNT = "act_1000000001"
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}

# Every environment variable the project reads (besides the token variables tenants.yaml names), with what it does.
VARIABLES = {
    "AUDIENCE_ASSETS_ENV": "local (default) or aws",
    "AUDIENCE_DATA_DIR": "local mode's data directory (default .audience_data)",
    "AUDIENCE_CONFIG_DIR": "a folder with partners.yaml, audiences.yaml (and tenants.yaml) replacing the shipped ones",
    "AUDIENCE_DEMO_DATA": "seed the demo data when the landing zone is empty (default on, local mode)",
    "AUDIENCE_RETENTION_DAYS": "landed files older than this are deleted",
    "AUDIENCE_LOCK_WAIT_SECONDS": "a step waits this long for another run's lock on a source or audience",
    "AUDIENCE_MAX_INFLATED_BYTES": "a compressed delivery inflates to at most this many bytes",
    "AUDIENCE_MAX_INFLATION_RATIO": "... and at most this many times its size",
    "AUDIENCE_METRICS_NAMESPACE": "the CloudWatch namespace (aws mode)",
    "AUDIENCE_LANDING_QUEUE_URL": "aws mode: drain the stack's queue of landing events instead of listing",
    "AUDIENCE_LANDING_SWEEP_SECONDS": "how often landing events are checked against a listing",
    "AUDIENCE_BUCKET": "aws mode: the data bucket (run time)",
    "AUDIENCE_KMS_KEY_ID": "aws mode: the KMS key every write uses (run time)",
    "AUDIENCE_RESULTS_BUCKET": "aws mode: where Clean Rooms writes results (no data source in it)",
    "AUDIENCE_SCRATCH_DIR": "the private root of scratch folders (default: the temp directory)",
    "AUDIENCE_DUCKDB_MEMORY_LIMIT": "DuckDB's memory limit per connection (default 1.5GB); it spills past it",
    "AUDIENCE_DUCKDB_THREADS": "DuckDB's threads per connection (default: every core)",
    "META_ACCESS_TOKEN": "the system user's token (unset: the built-in sandbox)",
    "META_ACCESS_TOKEN_SECRET_ID": "read the token from AWS Secrets Manager at run time instead",
    "META_APP_SECRET": "adds appsecret_proof to every call",
    "META_AD_ACCOUNT_ID": "act_<digits>: the implicit tenant's ad account",
    "META_GRAPH_URL": "the Graph API's address (default " + DEFAULT_GRAPH_URL + ")",
    "META_API_VERSION": "the Marketing API version (default: this release's, see core.meta.versions)",
    "META_SANDBOX_FAULTS": "the built-in sandbox throttles, fails and stalls like Meta (see Faults.parse)",
    "META_THROTTLE_MAX_SECONDS": "the longest single wait on Meta",
    "META_UPLOAD_DEADLINE_SECONDS": "an upload gives up (dead letters) after this long",
    "CLEANROOMS_MEMBERSHIP_ID": "aws mode: match in this AWS Clean Rooms membership",
    "CLEANROOMS_ANALYSIS_TEMPLATE_ARN": "no longer read: refused with the fix",
    "ALERT_WEBHOOK_URL": "failed runs are posted here (best effort)",
}


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
    retention_days: int = RETENTION_DAYS
    meta_graph_url: str = DEFAULT_GRAPH_URL
    meta_api_version: str = ""  # empty: this release's default version (`core.meta.versions`)
    demo_data: bool = True
    metrics_namespace: str = METRICS_NAMESPACE
    cleanrooms_membership_set: bool = False  # CLEANROOMS_MEMBERSHIP_ID: aws mode matches in AWS Clean Rooms
    meta: MetaPolicy = MetaPolicy()  # META_THROTTLE_MAX_SECONDS, META_UPLOAD_DEADLINE_SECONDS
    meta_sandbox_faults: str = ""
    lock_wait_seconds: float = LOCK_WAIT_SECONDS
    inflation: InflationLimits = InflationLimits()  # AUDIENCE_MAX_INFLATED_BYTES, AUDIENCE_MAX_INFLATION_RATIO
    landing_queue_url: str = ""
    landing_sweep_seconds: float = LANDING_SWEEP_SECONDS

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
            retention_days=int(
                _number(env, "AUDIENCE_RETENTION_DAYS", RETENTION_DAYS, low=0, high=3650, unit="days", whole=True)
            ),
            app_secret_set=bool(env.get("META_APP_SECRET")),
            meta_graph_url=_matching(env, "META_GRAPH_URL", r"https?://[^\s/?#]+[^\s?#]*", "an http(s) URL")
            or DEFAULT_GRAPH_URL,
            meta_api_version=_matching(env, "META_API_VERSION", r"v\d{1,3}\.0", "a Graph API version such as v25.0"),
            cleanrooms_membership_set=bool(env.get("CLEANROOMS_MEMBERSHIP_ID")),
            metrics_namespace=env.get("AUDIENCE_METRICS_NAMESPACE") or METRICS_NAMESPACE,
            demo_data=_flag(env, "AUDIENCE_DEMO_DATA", True),
            meta=_meta_policy(env),
            meta_sandbox_faults=env.get("META_SANDBOX_FAULTS", "").strip(),
            lock_wait_seconds=_number(env, "AUDIENCE_LOCK_WAIT_SECONDS", LOCK_WAIT_SECONDS, low=0.0, high=86400.0),
            inflation=_inflation_limits(env),
            landing_queue_url=_landing_queue(env, mode),
            landing_sweep_seconds=_number(
                env, "AUDIENCE_LANDING_SWEEP_SECONDS", LANDING_SWEEP_SECONDS, low=60.0, high=86400.0
            ),
        )

    @property
    def meta_sandbox(self) -> bool:
        """No token configured: talk to the built-in Graph API sandbox."""
        return not (self.meta_token_set or self.meta_token_secret_set)


def _meta_policy(env: Mapping[str, str]) -> MetaPolicy:
    default = MetaPolicy()
    return MetaPolicy(
        throttle_max_seconds=_number(
            env, "META_THROTTLE_MAX_SECONDS", default.throttle_max_seconds, low=1.0, high=3600.0
        ),
        deadline_seconds=_number(env, "META_UPLOAD_DEADLINE_SECONDS", default.deadline_seconds, low=60.0, high=86400.0),
    )


def _inflation_limits(env: Mapping[str, str]) -> InflationLimits:
    default = InflationLimits()
    return InflationLimits(
        max_bytes=int(
            _number(
                env, "AUDIENCE_MAX_INFLATED_BYTES", default.max_bytes, low=2**20, high=2**50, unit="bytes", whole=True
            )
        ),
        max_ratio=_number(
            env, "AUDIENCE_MAX_INFLATION_RATIO", default.max_ratio, low=2.0, high=100_000.0, unit="times"
        ),
    )


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
    """Variables read later, where they are used (below), or at run time: validated here so a bad one fails at
    load."""
    duckdb_limits(env)
    alert_webhook_url(env)
    _matching(env, "META_AD_ACCOUNT_ID", r"act_\d{1,20}", "act_ followed by digits")  # a dg.EnvVar at run time


def duckdb_limits(environ: Mapping[str, str] | None = None) -> tuple[str | None, int | None]:
    """DuckDB's memory limit and threads per connection (`AUDIENCE_DUCKDB_MEMORY_LIMIT`, `AUDIENCE_DUCKDB_THREADS`),
    or None for DuckDB's own choice."""
    env = os.environ if environ is None else environ
    memory = _matching(
        env, "AUDIENCE_DUCKDB_MEMORY_LIMIT", r"\d+(\.\d+)?\s*([KMGT]i?B)", "a size such as 1.5GB or 800MiB"
    )
    threads = _number(env, "AUDIENCE_DUCKDB_THREADS", 0, low=1, high=256, unit="threads", whole=True)
    return memory or None, int(threads) or None


def alert_webhook_url(environ: Mapping[str, str] | None = None) -> str:
    """Where failed runs are posted (`ALERT_WEBHOOK_URL`), or empty."""
    return _matching(os.environ if environ is None else environ, "ALERT_WEBHOOK_URL", r"https?://\S+", "an http(s) URL")


def scratch_root_variable() -> str:
    """`AUDIENCE_SCRATCH_DIR`, or empty: scratch folders then live under the system's temp directory."""
    return os.environ.get("AUDIENCE_SCRATCH_DIR", "").strip()


def dagster_home_set() -> bool:
    """A persistent Dagster instance is configured (`DAGSTER_HOME`); the commands use an ephemeral one otherwise."""
    return bool(os.environ.get("DAGSTER_HOME"))


def token_variable(name: str) -> str:
    """The value of a token variable tenants.yaml names (`meta_token_env`), read when its upload runs; empty if
    unset."""
    return os.environ.get(name, "") if name else ""


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """The process runs with `values` set (a stand-in world's variables), restored as they were on exit."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
