"""Deployment documents: the IAM policies are valid JSON and grant nothing service-wide."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml

from audience_assets_tests.conftest import REPO

# ---------------------------------------------------------------------------- the production instance and image


def test_the_production_instance_config_satisfies_dagsters_schema(tmp_path):
    """deploy/dagster.yaml against Dagster's instance schema, and each pluggable class's block against
    that class's own config schema (what the daemon checks when it starts)."""
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    (tmp_path / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None and "postgres" in config["storage"]
    for block, cls in (("run_launcher", EcsRunLauncher), ("compute_logs", S3ComputeLogManager)):
        assert (config[block]["module"], config[block]["class"]) == (
            cls.__module__.rsplit(".", 1)[0] if block == "run_launcher" else cls.__module__,
            cls.__name__,
        )
        result = validate_config(cls.config_type(), config[block]["config"])
        assert result.success, [e.message for e in result.errors]
    assert config["compute_logs"]["config"]["upload_extra_args"]["ServerSideEncryption"] == "aws:kms"
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert config["run_monitoring"]["enabled"] is True  # a dead run task is failed, not left STARTED


def test_the_local_instance_of_dagster_dev_monitors_runs(tmp_path):
    """`.dagster_home/dagster.yaml` (the README's DAGSTER_HOME) is valid and turns run monitoring on, with a
    maximum runtime: the local launcher cannot see a killed worker, so that bound is what fails such a run."""
    import dagster as dg

    (tmp_path / "dagster.yaml").write_text((REPO / ".dagster_home" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["max_runtime_seconds"] == 6 * 3600


def test_an_invalid_instance_config_is_refused(tmp_path):
    """The schema check above can fail: a misspelled key is an error."""
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text(
        (REPO / "deploy" / "dagster.yaml").read_text().replace("run_retries:", "run_retry:")
    )
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path))


def test_the_dockerfile_installs_dependencies_before_the_code_and_runs_unprivileged():
    lines = [
        line.strip()
        for line in (REPO / "deploy" / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0].startswith("FROM python:3.11")
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY")]
    first_install = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert lines[copies[0]].startswith("COPY pyproject.toml") and copies[0] < first_install < copies[1]
    assert "COPY audience_assets" in lines[copies[1]]
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0")
    assert any("dagster-postgres==0.29.27" in line for line in lines)  # pinned with dagster-aws 0.29.27


def test_the_production_workspace_loads_the_location_from_its_grpc_server():
    location = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    assert location["location_name"] == "audience_assets" and location["port"] == 4000
    assert "4000" in (REPO / "deploy" / "Dockerfile").read_text().splitlines()[-1]


def test_meta_uploads_share_one_pool_across_runs():
    """Parallel audience runs draw Meta upload slots from one pool (limited with `dagster instance
    concurrency set meta_api 1`, see deploy/README.md), so they share the ad account's budget; lookalikes, which
    call the same account, draw from it too."""
    from audience_assets.core.settings import Settings
    from audience_assets.definitions import build_definitions
    from audience_assets.defs.activation.meta_audience import META_POOL

    graph = build_definitions(Settings(data_dir=Path(tempfile.mkdtemp()), demo_data=False)).resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    meta = ("meta_custom_audience", "meta_lookalike_audience")
    assert pools["meta_custom_audience"] == pools["meta_lookalike_audience"] == {META_POOL}
    assert not any(p for key, p in pools.items() if key not in meta)  # nothing else waits on Meta
    assert f"concurrency set {META_POOL} 1" in (REPO / "deploy" / "README.md").read_text()


def test_the_instance_reads_only_variables_the_stacks_tasks_set():
    """deploy/dagster.yaml takes every value from the environment; each variable it reads is one the generated
    stack sets on the webserver, daemon and run tasks (as a value or a secret), and nothing is left to type."""
    import re

    from audience_assets.core.config import load_config
    from audience_assets.infra.stack import build_stack

    text = (REPO / "deploy" / "dagster.yaml").read_text()
    read = set(re.findall(r"\{env: ([A-Z_]+)\}", text)) | set(re.findall(r"env: ([A-Z_]+)\n", text))
    assert {"DAGSTER_PG_PASSWORD", "DAGSTER_RUN_TASK_DEFINITION", "AUDIENCE_BUCKET"} <= read
    assert not re.search(r"<[A-Za-z_-]+>", text), "a placeholder to replace by hand"
    resources = build_stack(load_config())["Resources"]
    for task in ("WebserverTask", "DaemonTask", "RunTask"):
        for container in resources[task]["Properties"]["ContainerDefinitions"]:
            given = {e["Name"] for e in container["Environment"]} | {s["Name"] for s in container["Secrets"]}
            assert read <= given, (task, container["Name"], sorted(read - given))
    assert "deploy/dagster.yaml /opt/dagster/home/dagster.yaml" in (REPO / "deploy" / "Dockerfile").read_text()


def test_the_stacks_alarms_watch_metrics_the_pipeline_publishes(aws):
    """Each alarm of the generated stack is a valid PutMetricAlarm request on a metric and dimensions the runs
    publish, and CloudWatch (moto on 127.0.0.1) accepts it."""
    import boto3

    from audience_assets.core.config import load_config
    from audience_assets.core.metrics import DIMENSIONS, METRICS
    from audience_assets.infra.stack import METRICS_NAMESPACE, build_stack
    from audience_assets.standins import cloudformation

    template = build_stack(load_config())
    stack = cloudformation.dry(template, "aa", {"AlarmEmail": ""}, account="123456789012", region="us-east-1")
    alarms = {
        logical: stack.resolve(body["Properties"])
        for logical, body in template["Resources"].items()
        if body["Type"] == "AWS::CloudWatch::Alarm"
    }
    published = {cloudwatch_name for cloudwatch_name, *_ in METRICS.values()}
    assert {a["MetricName"] for a in alarms.values()} == {"MatchRate", "UploadFailures"} <= published
    cloudwatch = boto3.client("cloudwatch")
    for logical, alarm in alarms.items():
        assert alarm["Namespace"] == METRICS_NAMESPACE == "AudienceAssets"
        dimensions = {d["Name"] for d in alarm["Dimensions"]}
        assert dimensions <= set(DIMENSIONS) and "tenant" in dimensions
        cloudwatch.put_metric_alarm(AlarmName=logical, **{k: v for k, v in alarm.items() if k != "AlarmActions"})
    described = cloudwatch.describe_alarms(AlarmNames=list(alarms))["MetricAlarms"]
    assert len(described) == len(alarms) == 5
