"""The event-driven landing zone on the stack's own wiring: objects put into the data bucket become EventBridge
"Object Created" events (moto delivers them as S3 does, to the stack's rule), routed to the stack's SQS queue,
drained by `landing_zone_sensor`. Each object version requests one run across duplicated and redelivered
messages; an object whose event was lost is found by the sweep, which says so; the sensor's calls stay within
the code server's role."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import dagster as dg

from audience_assets.core.config import load_config
from audience_assets.defs.ingest import definitions as ingest
from audience_assets.defs.ingest.sensors import MISSED_EVENT_TAG
from audience_assets.defs.resources import S3Storage
from audience_assets.infra.stack import build_stack
from audience_assets.standins.aws import ACCOUNT, REGION, aws_world
from audience_assets_tests import iam


def tick(sensor: dg.SensorDefinition, defs: dg.Definitions, storage: S3Storage, cursor: str | None):
    """One evaluation, as the daemon makes it; the run keys it requests for deliveries, and its new cursor."""
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            cursor=cursor, instance=instance, definitions=defs, resources={"storage": storage}
        ) as context,
    ):
        result = sensor.evaluate_tick(context)
    keys = [
        r.run_key + (" (missed event)" if r.tags.get(MISSED_EVENT_TAG) else "")
        for r in result.run_requests or []
        if not r.run_key.startswith("landing_zone_report")
    ]
    return keys, result.cursor


def test_each_object_version_runs_once_across_duplicated_and_redelivered_events_and_the_sweep_finds_a_lost_one(
    moto_endpoint: str,
):
    config = load_config()
    with aws_world(config, moto_endpoint, "aa-events") as aws:
        s3, sqs = boto3.client("s3"), boto3.client("sqs")
        queue = aws.env["AUDIENCE_LANDING_QUEUE_URL"]
        storage = S3Storage(bucket=aws.data_bucket, kms_key_id=aws.key_arn)
        built = ingest.build(config, "s3", None, queue_url=queue, sweep_seconds=10**9, event_grace=dt.timedelta(0))
        (sensor,) = built.sensors
        defs = dg.Definitions(sensors=[sensor], jobs=built.jobs, assets=built.assets, resources={"storage": storage})

        def put(key: str, body: bytes) -> str:
            return s3.put_object(
                Bucket=aws.data_bucket, Key=key, Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=aws.key_arn
            )["ETag"].strip('"')

        start, cursor = tick(sensor, defs, storage, None)  # the first tick sweeps (what landed before events)
        assert start == [] and json.loads(cursor)["swept"] > 0
        crm = put("landing/first_party/crm.csv", b"customer_id,email\nc1,a@example.com\n")
        acme = put("landing/partners/acme_data/day1.csv", b"Email Address\na@example.com\n")
        put("landing/partners/acme_data/processed/old.csv", b"Email Address\nb@example.com\n")  # not read: a sub-folder
        put("staging/elsewhere.json", b"{}")  # outside the landing zone: the rule does not route it

        with iam.recording() as calls:
            first, cursor = tick(sensor, defs, storage, cursor)
            assert sorted(first) == sorted(
                [f"landing/first_party/crm.csv@{crm}", f"landing/partners/acme_data/day1.csv@{acme}"]
            )

            # the same event twice (at-least-once delivery), and the same bytes put again: the same version, no run
            body = json.dumps(
                {
                    "source": "aws.s3",
                    "detail-type": "Object Created",
                    "time": "2026-12-07T00:00:00Z",
                    "detail": {
                        "bucket": {"name": aws.data_bucket},
                        "object": {"key": "landing/first_party/crm.csv", "size": 36, "etag": crm},
                    },
                }
            )
            sqs.send_message(QueueUrl=queue, MessageBody=body)
            put("landing/first_party/crm.csv", b"customer_id,email\nc1,a@example.com\n")
            again, cursor = tick(sensor, defs, storage, cursor)
            assert again == []
            assert json.loads(cursor)["receipts"], "this tick's messages are kept for deletion on the next"

            # a new version of a file is a new run
            changed = put("landing/partners/acme_data/day1.csv", b"Email Address\nc@example.com\n")
            third, cursor = tick(sensor, defs, storage, cursor)
            assert third == [f"landing/partners/acme_data/day1.csv@{changed}"]

            # a delivery whose event was lost (taken off the queue before the sensor saw it): the sweep finds it
            lost = put("landing/partners/beta_insights/segments.parquet", b"PAR1")
            for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            sweeping = ingest.build(config, "s3", None, queue_url=queue, sweep_seconds=0, event_grace=dt.timedelta(0))
            (sweeper,) = sweeping.sensors
            found, cursor = tick(sweeper, defs, storage, cursor)
            assert found == [f"landing/partners/beta_insights/segments.parquet@{lost} (missed event)"]
            assert tick(sweeper, defs, storage, cursor)[0] == [], "swept once"

        assert (
            sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]
            == "0"
        ), "every message handed out was deleted on the following tick"
        template = build_stack(config)
        role = aws.stack.resolve(template["Resources"]["CodeServerRole"]["Properties"]["Policies"][0]["PolicyDocument"])
        refused, _ = iam.judge(role, calls, region=REGION, account=ACCOUNT, key_arn=aws.key_arn)
        assert refused == [], refused
        assert {c.service for c in calls} == {"s3", "sqs"}
