"""The metrics resource: CloudWatch in aws mode, a Prometheus text file locally (`core.metrics`)."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from audience_assets.core.metrics import CloudWatchMetrics, PrometheusFileMetrics
from audience_assets.core.policies import METRICS_NAMESPACE


class Metrics(dg.ConfigurableResource):
    def publish(self, values: Mapping[str, float], **dimensions: str) -> None:
        raise NotImplementedError


class CloudWatch(Metrics):
    namespace: str = METRICS_NAMESPACE
    region_name: str | None = None

    def publish(self, values: Mapping[str, float], **dimensions: str) -> None:
        CloudWatchMetrics(self.namespace, self.region_name).publish(values, **dimensions)


class PrometheusFile(Metrics):
    path: str

    def publish(self, values: Mapping[str, float], **dimensions: str) -> None:
        PrometheusFileMetrics(self.path).publish(values, **dimensions)
