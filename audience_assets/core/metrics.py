"""Operational metrics per run: match rate, rows uploaded, invalid entries, throttled requests, upload
latency, freshness lag and failed uploads, dimensioned by tenant, audience and partner.

aws mode publishes them to CloudWatch (`put_metric_data`, namespace `AUDIENCE_METRICS_NAMESPACE`);
local mode keeps the latest value of each series in a Prometheus text file (node_exporter's textfile
collector format), so the same dashboards and alarms can be built on either. No metric carries PII.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import boto3
from botocore.config import Config

from audience_assets.core.policies import METRICS_NAMESPACE

# name -> (CloudWatch metric name, CloudWatch unit, Prometheus name, help)
METRICS = {
    "match_rate": ("MatchRate", "None", "audience_assets_match_rate", "Share of first-party customers matched"),
    "rows_uploaded": ("RowsUploaded", "Count", "audience_assets_rows_uploaded", "Rows sent to Meta by the run"),
    "invalid_entries": ("InvalidEntries", "Count", "audience_assets_invalid_entries", "Entries Meta reported invalid"),
    "throttled_requests": (
        "ThrottledRequests",
        "Count",
        "audience_assets_throttled_requests",
        "Meta requests answered with a rate limit",
    ),
    "upload_latency": (
        "UploadLatency",
        "Seconds",
        "audience_assets_upload_latency_seconds",
        "Mean latency of one Meta request",
    ),
    "freshness_lag": (
        "FreshnessLag",
        "Seconds",
        "audience_assets_freshness_lag_seconds",
        "Seconds from the newest partner delivery used to the end of the upload",
    ),
    "upload_failures": (
        "UploadFailures",
        "Count",
        "audience_assets_upload_failures",
        "1 when the audience's upload failed, 0 when it completed",
    ),
}
DIMENSIONS = ("tenant", "audience", "partner")


def _checked(values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
    unknown = sorted(set(values) - set(METRICS)) + sorted(set(dimensions) - set(DIMENSIONS))
    if unknown:
        raise ValueError(f"unknown metric or dimension {unknown}; metrics: {', '.join(METRICS)}")


class CloudWatchMetrics:
    """CloudWatch custom metrics; the generated stack's alarms watch them (infra.stack)."""

    def __init__(self, namespace: str = METRICS_NAMESPACE, region_name: str | None = None):
        self.namespace, self.region_name = namespace, region_name

    def publish(self, values: Mapping[str, float], **dimensions: str) -> None:
        _checked(values, dimensions)
        now = dt.datetime.now(dt.UTC)
        cloudwatch = boto3.client(
            "cloudwatch",
            region_name=self.region_name,
            config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=30),
        )
        dims = [{"Name": name, "Value": value} for name, value in sorted(dimensions.items())]
        data = [
            {
                "MetricName": METRICS[name][0],
                "Dimensions": dims,
                "Timestamp": now,
                "Value": float(value),
                "Unit": METRICS[name][1],
            }
            for name, value in values.items()
        ]
        for start in range(0, len(data), 1000):  # the API takes at most 1,000 values per call
            cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=data[start : start + 1000])


_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


class PrometheusFileMetrics:
    """The latest value of every series in one text file, rewritten atomically under a lock (several runs
    may publish at once); point node_exporter's textfile collector, or any scraper, at it."""

    def __init__(self, path: Path | str):
        self.path = str(path)

    def publish(self, values: Mapping[str, float], **dimensions: str) -> None:
        _checked(values, dimensions)
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(dimensions.items()))
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            series = _read(target)
            for name, value in values.items():
                series[(METRICS[name][2], "{" + labels + "}" if labels else "")] = float(value)
            _write(target, series)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _read(path: Path) -> dict[tuple[str, str], float]:
    series: dict[tuple[str, str], float] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _SERIES.match(line)
            if match and not line.startswith("#"):
                series[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return series


def _write(path: Path, series: Mapping[tuple[str, str], float]) -> None:
    lines = []
    for _, (_, _, prometheus, help_text) in sorted(METRICS.items(), key=lambda item: item[1][2]):
        mine = sorted((labels, value) for (name, labels), value in series.items() if name == prometheus)
        if mine:
            lines += [f"# HELP {prometheus} {help_text}", f"# TYPE {prometheus} gauge"]
            lines += [f"{prometheus}{labels} {value!r}" for labels, value in mine]
    fd, tmp = tempfile.mkstemp(prefix=".aa-tmp-", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes it 0600; a scraper under another user must read it (no PII in it)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
