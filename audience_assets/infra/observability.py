"""Observability, in the generated stack: CloudWatch alarms (a partner's match rate dropping, a failed upload) to
an SNS topic an operator may subscribe to by email, and a dashboard of the run metrics (`core.metrics`)."""

from __future__ import annotations

import json
from typing import Any

from audience_assets.core.config import ProjectConfig
from audience_assets.core.metrics import METRICS
from audience_assets.infra.cfn import logical, ref, sub, tags

METRICS_NAMESPACE = "AudienceAssets"
# the dashboard's graphs: (metric, title, statistic)
DASHBOARD = (
    ("rows_uploaded", "Rows uploaded to Meta", "Sum"),
    ("match_rate", "Match rate", "Minimum"),
    ("invalid_entries", "Entries Meta rejected", "Sum"),
    ("throttled_requests", "Throttled Meta requests", "Sum"),
    ("freshness_lag", "Freshness lag (s)", "Maximum"),
    ("upload_failures", "Failed uploads", "Sum"),
)


def observability(config: ProjectConfig) -> dict[str, Any]:
    """The alarm topic, every alarm, the dashboard and the optional email subscription."""
    alarm = {"Namespace": METRICS_NAMESPACE, "EvaluationPeriods": 1, "AlarmActions": [ref("AlarmTopic")]}
    return {
        "AlarmTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"KmsMasterKeyId": ref("ProjectKey"), "Tags": tags()},
        },
        **_match_rate_alarms(config, alarm),
        **_upload_failure_alarms(config, alarm),
        "Dashboard": _dashboard(),
        "AlarmSubscription": {
            "Type": "AWS::SNS::Subscription",
            "Condition": "AlarmEmailGiven",
            "Properties": {"TopicArn": ref("AlarmTopic"), "Protocol": "email", "Endpoint": ref("AlarmEmail")},
        },
    }


def _match_rate_alarms(config: ProjectConfig, alarm: dict[str, Any]) -> dict[str, Any]:
    """An alarm per partner when the day's match rate falls below its min_match_rate, or no rate was published:
    a partial, stale or mis-keyed delivery."""
    alarms: dict[str, Any] = {}
    for partner in sorted(config.partners):
        tenant = config.tenant_of_partner(partner)
        alarms[f"MatchRateDrop{logical(partner)}"] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                **alarm,
                "AlarmDescription": f"{partner}: the share of customers matched fell below its min_match_rate (a "
                "partial, stale or mis-keyed delivery)",
                "MetricName": METRICS["match_rate"][0],
                "Dimensions": [{"Name": "partner", "Value": partner}, {"Name": "tenant", "Value": tenant}],
                "Statistic": "Minimum",
                "Period": 86400,
                "Threshold": config.partners[partner].min_match_rate,
                "ComparisonOperator": "LessThanThreshold",
                "TreatMissingData": "breaching",
            },
        }
    return alarms


def _upload_failure_alarms(config: ProjectConfig, alarm: dict[str, Any]) -> dict[str, Any]:
    """An alarm per audience when an upload to Meta failed within the hour (its batches are dead-lettered)."""
    alarms: dict[str, Any] = {}
    for audience in sorted(config.audiences):
        alarms[f"UploadFailed{logical(audience)}"] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                **alarm,
                "AlarmDescription": f"{audience}: an upload to Meta failed (its batches are dead-lettered; "
                "replay_job re-sends them)",
                "MetricName": METRICS["upload_failures"][0],
                "Dimensions": [
                    {"Name": "audience", "Value": audience},
                    {"Name": "tenant", "Value": config.tenant_of_audience(audience)},
                ],
                "Statistic": "Maximum",
                "Period": 3600,
                "Threshold": 1,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "notBreaching",
            },
        }
    return alarms


def _dashboard() -> dict[str, Any]:
    """The dashboard: a graph of each run metric in `DASHBOARD`."""
    widgets = [_widget(name, title, statistic) for name, title, statistic in DASHBOARD]
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {"DashboardBody": sub(json.dumps({"widgets": widgets}))},
    }


def _widget(name: str, title: str, statistic: str) -> dict[str, Any]:
    """A graph of every series of one metric.

    A metric is published with tenant and partner or audience: a SEARCH on the namespace and name plots every
    such series (a widget naming only `tenant` would match none: CloudWatch matches dimension sets exactly)."""
    return {
        "type": "metric",
        "width": 12,
        "height": 6,
        "properties": {
            "title": title,
            "region": "${AWS::Region}",
            "view": "timeSeries",
            "metrics": [
                [
                    {
                        "id": "series",
                        "expression": f"SEARCH('{{{METRICS_NAMESPACE}}} MetricName=\"{METRICS[name][0]}\"', "
                        f"'{statistic}', 3600)",
                    }
                ]
            ],
        },
    }
