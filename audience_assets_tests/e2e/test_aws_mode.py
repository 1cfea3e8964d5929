"""aws mode end to end, as a deployment runs it: the generated stack applied to stand-ins that speak the AWS APIs
(moto on loopback; the Clean Rooms API stand-in on the Spark engine's rules), the world's deliveries landing in
the stack's data bucket, the headless pipeline configured only by the variables the stack's outputs give, the
Meta token read from the stack's secret and used against the Graph API sandbox on loopback.

One partner (beta_insights) is a member of the collaboration here: its table is associated from its own account
and none of its files land with us. It must end with the same audiences on Meta as local mode (the `world`,
where it delivers files), every object the pipeline writes SSE-KMS
under the project key and tagged with its tenant, the matches computed by protected queries through the API with
results in their own bucket, and every AWS call the code made allowed by the stack's run role, which allows
nothing the code did not need."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import boto3
import dagster as dg
import pytest

from audience_assets.core import layout
from audience_assets.core.cleanroom import protected_query
from audience_assets.core.config import load_config
from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions
from audience_assets.headless import run_pipeline
from audience_assets.infra.stack import build_stack
from audience_assets.standins.aws import ACCOUNT, AD_ACCOUNT, REGION, aws_world
from audience_assets.standins.cleanrooms_api import SPARK_RESULTS_RULE
from audience_assets.standins.graph_sandbox import GraphSandbox, SandboxConfig
from audience_assets_tests import iam

pytestmark = pytest.mark.slow
TOKEN = "stack-secret-token-7c1"
MEMBER = "beta_insights"


def test_the_pipeline_runs_on_the_stacks_resources_as_local_mode_does(
    world: dict, moto_endpoint: str, tmp_path: Path, monkeypatch
):
    config_dir = world["config_dir"]
    partners = config_dir / "partners.yaml"
    partners.write_text(
        partners.read_text().replace("  beta_insights:\n", "  beta_insights:\n    clean_room: {member: true}\n")
    )
    config = load_config(config_dir)
    assert config.partners[MEMBER].clean_room.member
    published_by_the_member = world["data"] / layout.partner_table(MEMBER)  # what it built in its account
    with aws_world(config, moto_endpoint, "aa-e2e", members={MEMBER: published_by_the_member}) as aws:
        s3 = boto3.client("s3")
        landing = world["data"] / "landing"
        delivered = [p for p in landing.rglob("*") if p.is_file() and MEMBER not in p.parts]
        for path in sorted(delivered):  # as partners deliver: the bucket's key
            key = path.relative_to(world["data"]).as_posix()
            s3.upload_file(
                str(path),
                aws.data_bucket,
                key,
                ExtraArgs={"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": aws.key_arn},
            )
        secret = aws.output("MetaTokenDefault")
        boto3.client("secretsmanager").put_secret_value(SecretId=secret, SecretString=TOKEN)
        meta = GraphSandbox(
            tmp_path / "graph.sqlite",
            SandboxConfig(tokens={TOKEN: ["*"]}, ad_accounts={AD_ACCOUNT: {"name": "advertiser"}}),
        )
        with meta.serve() as graph:
            for name, value in {
                **aws.env,
                "META_ACCESS_TOKEN_SECRET_ID": secret,
                "META_AD_ACCOUNT_ID": AD_ACCOUNT,
                "META_GRAPH_URL": graph.url,
                "AUDIENCE_DATA_DIR": str(tmp_path / "local"),
                "AUDIENCE_CONFIG_DIR": str(config_dir),
                "AUDIENCE_RETENTION_DAYS": "0",
                "AUDIENCE_DEMO_DATA": "0",
            }.items():
                monkeypatch.setenv(name, value)
            settings = Settings.from_env()
            out = io.StringIO()
            with iam.recording() as calls, dg.DagsterInstance.ephemeral() as instance:
                assert run_pipeline(settings, instance, out), out.getvalue()
                retention = build_definitions(settings).resolve_job_def("retention_job")
                assert retention.execute_in_process(instance=instance).success  # the plaintext goes, by the run role
                match_arn = aws.stack.attributes["TemplateAudienceMatchAcmeData"]["Arn"]
                with pytest.raises(protected_query.ProtectedQueryFailed) as cancelled:
                    protected_query.run(  # the run terminated mid-query: the code cancels it
                        boto3.client("cleanrooms"),
                        membership_id=aws.membership_id,
                        sql_parameters={"analysisTemplateArn": match_arn},
                        bucket=aws.results_bucket,
                        key_prefix="results/cancelled",
                        what="a cancelled match",
                        polling=protected_query.Polling(first=0, longest=0, deadline=-1),
                    )
                assert cancelled.value.status == "CANCELLED"
                reported = {
                    ("MatchRate", "partner", p): latest(instance, "clean_room_matches", p)["match_rate"]
                    for p in config.partners
                }
                assert latest(instance, "partner_data", MEMBER)["held_by"].startswith("the partner")
                reported |= {
                    ("RowsUploaded", "audience", a): latest(instance, "meta_custom_audience", a)["rows_sent"]
                    for a in config.audiences
                }
            for name, spec in config.audiences.items():
                audience_id = meta.audience_id(spec.meta_name, AD_ACCOUNT)
                assert meta.member_keys(audience_id) == world["held"][name], name
            meta.close()

        # the run's metrics reached CloudWatch with their dimensions, as the assets reported them
        cloudwatch, now = boto3.client("cloudwatch"), dt.datetime.now(dt.UTC)
        for (metric, dimension, value), wanted in reported.items():
            points = cloudwatch.get_metric_statistics(
                Namespace="AudienceAssets",
                MetricName=metric,
                StartTime=now - dt.timedelta(hours=1),
                EndTime=now + dt.timedelta(minutes=5),
                Period=3600,
                Statistics=["Maximum"],
                Dimensions=[{"Name": dimension, "Value": value}, {"Name": "tenant", "Value": "default"}],
            )["Datapoints"]
            assert [p["Maximum"] for p in points] == [pytest.approx(wanted)], (metric, value)

        # the matches ran as protected queries through the API, each partner's own templates, results apart
        started = [c for c in aws.clean_rooms.calls if c == "StartProtectedQuery"]
        assert len(started) == 2 * len(config.partners) + 1
        written = _objects(s3, aws.results_bucket)
        assert written and all(k.startswith("results/") for k in written)
        for key in written:
            assert s3.head_object(Bucket=aws.results_bucket, Key=key)["SSEKMSKeyId"] == aws.key_arn, key

        # every object the pipeline wrote: SSE-KMS under the project key, tagged with its tenant
        ours = [k for k in _objects(s3, aws.data_bucket) if not k.startswith("landing/")]
        assert layout.partner_table(MEMBER) not in ours and layout.partner_table("acme_data") in ours
        assert {k.split("/")[0] for k in ours} >= {"staging", "clean_room", "audiences", "meta", "audit", "reports"}
        for key in ours:
            head = s3.head_object(Bucket=aws.data_bucket, Key=key)
            assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", aws.key_arn), key
            assert {"Key": "tenant", "Value": "default"} in s3.get_object_tagging(Bucket=aws.data_bucket, Key=key)[
                "TagSet"
            ], key
        assert not [k for k in _objects(s3, aws.data_bucket) if k.startswith("landing/")], (
            "retention deleted the plaintext"
        )

        # the run role allows every call the code made, and nothing the code did not need
        template = build_stack(config)
        run_policy = aws.stack.resolve(template["Resources"]["RunRole"]["Properties"]["Policies"][0]["PolicyDocument"])
        refused, unused = iam.judge(run_policy, calls, region=REGION, account=ACCOUNT, key_arn=aws.key_arn)
        assert refused == [], "\n".join(map(str, sorted(set(refused), key=str)))
        assert unused == set(), f"the run role allows actions the code never called: {sorted(unused)}"
        assert {c.service for c in calls} == {"s3", "cleanrooms", "secretsmanager", "cloudwatch"}


def test_on_spark_the_results_may_not_go_to_a_bucket_that_holds_a_data_source(world: dict, moto_endpoint: str):
    config = world["config"]
    with aws_world(config, moto_endpoint, "aa-spark") as aws:
        match_arn = aws.stack.attributes["TemplateAudienceMatchAcmeData"]["Arn"]
        with pytest.raises(protected_query.ProtectedQueryFailed, match=f"{SPARK_RESULTS_RULE}.*ValidationException"):
            protected_query.run(
                boto3.client("cleanrooms"),
                membership_id=aws.membership_id,
                sql_parameters={"analysisTemplateArn": match_arn},
                bucket=aws.data_bucket,  # where the clean-room tables are: refused, as AWS refuses it
                key_prefix="results/acme_data/run",
                what="audience_match for acme_data",
            )


def latest(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records[0]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _objects(s3, bucket: str) -> list[str]:
    return [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
