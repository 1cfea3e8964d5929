"""landing_zone_sensor in aws mode: S3 (a moto server on loopback, real HTTP) listed through the storage
resource. Each object requests exactly one run, keyed by key and ETag, across ticks and restarts."""

from __future__ import annotations

import boto3
import dagster as dg
import pytest

from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions
from audience_assets.defs.ingest import sensors
from audience_assets.defs.resources import S3Storage


def tick(aws: dict[str, str], cursor: str | None) -> tuple[list[dg.RunRequest], str]:
    """One evaluation of a freshly built sensor (as after a daemon restart) with the stored cursor."""
    defs = build_definitions(Settings(env="aws", meta_token_set=False))
    sensor = defs.resolve_sensor_def("landing_zone_sensor")
    storage = S3Storage(bucket=aws["AUDIENCE_BUCKET"], kms_key_id=aws["AUDIENCE_KMS_KEY_ID"])
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            cursor=cursor, instance=instance, definitions=defs, resources={"storage": storage}
        ) as context,
    ):
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor


def put(aws: dict[str, str], key: str, body: bytes = b"email\nann@example.com\n", s3=None) -> str:
    response = (s3 or boto3.client("s3")).put_object(
        Bucket=aws["AUDIENCE_BUCKET"],
        Key=key,
        Body=body,
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=aws["AUDIENCE_KMS_KEY_ID"],
    )
    return response["ETag"].strip('"')


def test_each_object_runs_once_across_ticks_and_restarts(aws):
    etag = put(aws, "landing/partners/acme_data/day1.csv")
    put(aws, "landing/partners/acme_data/")  # a zero-byte folder marker
    put(aws, "landing/partners/acme_data/upload.csv.tmp")
    put(aws, "landing/first_party/crm.csv")
    requests, cursor = tick(aws, None)
    assert sorted((r.job_name, r.partition_key, r.run_key.split("@")[0]) for r in requests) == [
        ("first_party_job", None, "landing/first_party/crm.csv"),
        ("landing_zone_report_job", None, "landing_zone_report"),  # the .tmp upload is reported, not read
        ("partner_data_job", "acme_data", "landing/partners/acme_data/day1.csv"),
    ]
    assert {r.run_key.split("@")[1] for r in requests if r.partition_key or "first_party" in r.run_key} == {etag}
    for _ in range(3):
        again, cursor = tick(aws, cursor)
        assert again == []

    same = put(aws, "landing/partners/acme_data/day1.csv")  # re-uploaded, same content: same ETag
    assert same == etag and tick(aws, cursor)[0] == []
    changed = put(aws, "landing/partners/acme_data/day1.csv", b"email\nbob@example.com\n")
    requests, cursor = tick(aws, cursor)
    assert [r.run_key for r in requests] == [f"landing/partners/acme_data/day1.csv@{changed}"]
    assert tick(aws, cursor)[0] == []


@pytest.mark.slow
def test_a_backlog_of_preexisting_objects_drains_over_ticks_on_first_start(aws, monkeypatch: pytest.MonkeyPatch):
    """1,100 objects (more than one S3 listing page of 1,000) drained at 275 runs per tick: the ticks, pages and
    cursor behave as with 5,000 objects at the default 500, at a fifth of moto's cost (about 7 ms a put, 0.5 s a
    listed page)."""
    monkeypatch.setattr(sensors, "MAX_RUNS_PER_TICK", 275)
    total = 1_100
    keys = [f"landing/partners/beta_insights/part-{i:05d}.parquet" for i in range(total)]
    s3 = boto3.client("s3")  # one client (creating one costs more than a put; moto serves one request at a time)
    for key in keys:
        put(aws, key, key.encode(), s3)
    seen, cursor, ticks = [], None, 0
    while True:
        requests, cursor = tick(aws, cursor)
        ticks += 1
        if not requests:
            break
        assert len(requests) <= sensors.MAX_RUNS_PER_TICK
        seen += [r.run_key.split("@")[0] for r in requests]
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen))
    assert ticks == total // sensors.MAX_RUNS_PER_TICK + 1
    assert len(cursor) < 1_000_000  # the cursor keeps recent objects only, bounded by the overlap window
    put(aws, f"landing/partners/beta_insights/part-{total:05d}.parquet", b"new")
    assert [r.run_key.split("@")[0] for r in tick(aws, cursor)[0]] == [
        f"landing/partners/beta_insights/part-{total:05d}.parquet"
    ]
