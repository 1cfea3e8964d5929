"""aws mode end to end: the headless pipeline against S3, KMS and CloudWatch on a moto server (real HTTP on
loopback). Every object the pipeline writes must be encrypted with SSE-KMS under the configured key and
tagged with its tenant, and the run's metrics must reach CloudWatch with their dimensions."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import boto3
import dagster as dg
import pytest

from audience_assets.core.demo import generate
from audience_assets_tests.conftest import REPO, clean_env, make_dagster_home

pytestmark = pytest.mark.slow


def test_every_object_the_pipeline_writes_is_sse_kms(tmp_path: Path, aws: dict[str, str]):
    s3 = boto3.client("s3")
    bucket = aws["AUDIENCE_BUCKET"]
    landing = tmp_path / "demo"
    generate(landing, customers=20_000, seed=3)
    delivered = set()
    for path in sorted((landing / "landing").rglob("*")):
        if path.is_file():
            key = path.relative_to(landing).as_posix()
            s3.upload_file(str(path), bucket, key)  # as a partner would: the bucket's default, not ours
            delivered.add(key)

    home = make_dagster_home(tmp_path / "dagster_home")
    env = clean_env(
        **aws,
        AUDIENCE_ASSETS_ENV="aws",
        AUDIENCE_DATA_DIR=str(tmp_path / "local"),
        DAGSTER_HOME=str(home),
        AUDIENCE_METRICS_NAMESPACE=bucket,
    )
    done = subprocess.run(
        [sys.executable, "-m", "audience_assets", "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert not (tmp_path / "local" / "landing").exists(), "aws mode must not seed local demo data"

    written = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
        if o["Key"] not in delivered
    ]
    areas = {key.split("/")[0] for key in written}
    assert areas == {"staging", "clean_room", "audiences", "meta", "audit", "reports"}, areas
    assert len(written) > 20
    for key in written:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == "aws:kms", key
        assert head.get("SSEKMSKeyId") == aws["AUDIENCE_KMS_KEY_ID"], key
        # and the tenant as an object tag, for S3 cost allocation per advertiser
        assert {"Key": "tenant", "Value": "default"} in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"], key

    # the run's metrics, read back from CloudWatch with their dimensions, equal what the assets reported
    with dg.DagsterInstance.from_config(str(home)) as instance:

        def latest(key: str, partition: str) -> dict:
            record = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
            ).records[0]
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}

        expected = {
            ("MatchRate", "partner", p): latest("clean_room_matches", p)["match_rate"]
            for p in ("acme_data", "beta_insights")
        }
        for audience in ("new_parents", "travel_enthusiasts", "young_gamers"):
            upload = latest("meta_custom_audience", audience)
            expected[("RowsUploaded", "audience", audience)] = upload["rows_sent"]
            expected[("InvalidEntries", "audience", audience)] = upload["num_invalid_entries"]
            expected[("ThrottledRequests", "audience", audience)] = upload["throttled_responses"]
            expected[("UploadFailures", "audience", audience)] = 0
    cloudwatch = boto3.client("cloudwatch")
    listed = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace=bucket)["Metrics"]}
    assert listed == {
        "MatchRate",
        "RowsUploaded",
        "InvalidEntries",
        "ThrottledRequests",
        "UploadLatency",
        "FreshnessLag",
        "UploadFailures",
    }
    now = dt.datetime.now(dt.UTC)
    for (metric, dimension, value), wanted in expected.items():
        points = cloudwatch.get_metric_statistics(
            Namespace=bucket,
            MetricName=metric,
            StartTime=now - dt.timedelta(hours=1),
            EndTime=now + dt.timedelta(minutes=5),
            Period=3600,
            Statistics=["Maximum"],
            Dimensions=[{"Name": dimension, "Value": value}, {"Name": "tenant", "Value": "default"}],
        )["Datapoints"]
        assert [p["Maximum"] for p in points] == [pytest.approx(wanted)], (metric, value)
