"""The AWS Clean Rooms path: the real boto3 `cleanrooms` client behind botocore's Stubber (every request is
validated and serialized against the service model, every stubbed response checked against it), with
results in S3 on a moto server on 127.0.0.1.

The Stubber never sends anything; the client's endpoint is a closed loopback port all the same, so a call
that escaped the stubs would fail here rather than reach AWS.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import boto3
import duckdb
import pytest
import yaml
from botocore.stub import Stubber
from dagster._core.errors import DagsterExecutionInterruptedError

from audience_assets.core import layout
from audience_assets.core.cleanroom import protected_query
from audience_assets.core.config import load_config
from audience_assets.core.store import S3Store
from audience_assets.defs.resources import AwsCleanRoom
from audience_assets_tests.conftest import copy_config

MEMBERSHIP = "5d3c1e7a-8b9f-4c2d-a1e0-7f6b5a4c3d2e"
ACCOUNT = "123456789012"
CLOSED_LOOPBACK = "http://127.0.0.1:9"


def _arn(name: str) -> str:
    return f"arn:aws:cleanrooms:us-east-1:{ACCOUNT}:membership/{MEMBERSHIP}/analysistemplate/{name}"


def _stubbed_client():
    client = boto3.client(
        "cleanrooms",
        region_name="us-east-1",
        endpoint_url=CLOSED_LOOPBACK,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    stubber = Stubber(client)
    stubber.activate()
    return client, stubber


def _query(query_id: str, status: str, **extra) -> dict:
    return {
        "protectedQuery": {
            "id": query_id,
            "membershipId": MEMBERSHIP,
            "membershipArn": f"arn:aws:cleanrooms:us-east-1:{ACCOUNT}:membership/{MEMBERSHIP}",
            "createTime": dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
            "status": status,
            **extra,
        }
    }


def _start_params(bucket: str, prefix: str, sql: dict) -> dict:
    return {
        "type": "SQL",
        "membershipIdentifier": MEMBERSHIP,
        "sqlParameters": sql,
        "resultConfiguration": {
            "outputConfiguration": {"s3": {"resultFormat": "PARQUET", "bucket": bucket, "keyPrefix": prefix}}
        },
    }


def _get_params(query_id: str) -> dict:
    return {"membershipIdentifier": MEMBERSHIP, "protectedQueryIdentifier": query_id}


QID = "7e1f0c2a-4b3d-4e5f-8a9b-0c1d2e3f4a5b"


# ---------------------------------------------------------------------------- the driver, request by request


def test_a_query_is_polled_with_back_off_until_it_succeeds():
    client, stubber = _stubbed_client()
    sql = {"analysisTemplateArn": _arn("match"), "parameters": {"segment": "golf"}}
    stubber.add_response("start_protected_query", _query(QID, "SUBMITTED"), _start_params("results", "runs/1", sql))
    for status in ("SUBMITTED", "STARTED", "STARTED", "STARTED"):
        stubber.add_response("get_protected_query", _query(QID, status), _get_params(QID))
    stubber.add_response(
        "get_protected_query",
        _query(
            QID,
            "SUCCESS",
            result={"output": {"s3": {"location": f"s3://results/runs/1/{QID}/"}}},
            statistics={"totalDurationInMillis": 91_000},
        ),
        _get_params(QID),
    )
    sleeps = []
    done = protected_query.run(
        client,
        membership_id=MEMBERSHIP,
        sql_parameters=sql,
        bucket="results",
        key_prefix="runs/1",
        what="audience_match for acme",
        sleep=sleeps.append,
    )
    stubber.assert_no_pending_responses()
    assert sleeps == [5, 10, 20, 30]
    assert (done.id, done.location, done.duration_ms) == (QID, f"s3://results/runs/1/{QID}/", 91_000)
    assert done.statuses == ("SUBMITTED", "STARTED", "SUCCESS")


@pytest.mark.parametrize(
    "status, code, message",
    [
        ("FAILED", "INVALID_QUERY", "Column(s) [hashed_email] is not allowed in select"),
        ("TIMED_OUT", "QUERY_TIMEOUT", "Query exceeded the maximum run time"),
    ],
)
def test_failed_and_timed_out_queries_fail_with_the_services_message(status, code, message):
    client, stubber = _stubbed_client()
    sql = {"queryString": "SELECT 1"}
    stubber.add_response("start_protected_query", _query(QID, "SUBMITTED"), _start_params("results", "p", sql))
    stubber.add_response(
        "get_protected_query", _query(QID, status, error={"code": code, "message": message}), _get_params(QID)
    )
    with pytest.raises(protected_query.ProtectedQueryFailed) as failure:
        protected_query.run(
            client,
            membership_id=MEMBERSHIP,
            sql_parameters=sql,
            bucket="results",
            key_prefix="p",
            what="audience_match for acme",
            sleep=lambda s: None,
        )
    assert failure.value.status == status and failure.value.query_id == QID
    assert f"ended {status}: {message} ({code})" in str(failure.value)
    assert "audience_match for acme" in str(failure.value)


def test_a_query_refused_at_start_fails_with_the_services_message():
    client, stubber = _stubbed_client()
    stubber.add_client_error(
        "start_protected_query",
        service_error_code="ValidationException",
        service_message="Inner join to query runner table required for table acme",
        http_status_code=400,
    )
    with pytest.raises(
        protected_query.ProtectedQueryFailed,
        match="refused to start audience_match for acme: Inner join "
        "to query runner table required for table acme "
        r"\(ValidationException\)",
    ):
        protected_query.run(
            client,
            membership_id=MEMBERSHIP,
            sql_parameters={"queryString": "SELECT 1"},
            bucket="results",
            key_prefix="p",
            what="audience_match for acme",
        )


def _running_query_then_cancel():
    """A client whose query starts, is still running at the first poll, and then is cancelled."""
    client, stubber = _stubbed_client()
    sql = {"queryString": "SELECT 1"}
    stubber.add_response("start_protected_query", _query(QID, "SUBMITTED"), _start_params("results", "p", sql))
    stubber.add_response("get_protected_query", _query(QID, "STARTED"), _get_params(QID))
    stubber.add_response(
        "update_protected_query", _query(QID, "CANCELLING"), {**_get_params(QID), "targetStatus": "CANCELLED"}
    )
    return client, stubber, sql


def test_a_terminated_run_cancels_its_query():
    client, stubber, sql = _running_query_then_cancel()

    def terminated(seconds: float) -> None:
        raise DagsterExecutionInterruptedError()  # what Dagster raises in the step when the run is terminated

    with pytest.raises(DagsterExecutionInterruptedError):
        protected_query.run(
            client,
            membership_id=MEMBERSHIP,
            sql_parameters=sql,
            bucket="results",
            key_prefix="p",
            what="match",
            sleep=terminated,
        )
    stubber.assert_no_pending_responses()


def test_a_query_past_its_deadline_is_cancelled_and_fails():
    client, stubber, sql = _running_query_then_cancel()
    now = [0.0]
    with pytest.raises(protected_query.ProtectedQueryFailed, match="did not finish within 60 s") as failure:
        protected_query.run(
            client,
            membership_id=MEMBERSHIP,
            sql_parameters=sql,
            bucket="results",
            key_prefix="p",
            what="match",
            polling=protected_query.Polling(first=61, longest=61, deadline=60),
            sleep=lambda s: now.__setitem__(0, now[0] + s),
            clock=lambda: now[0],
        )
    stubber.assert_no_pending_responses()
    assert failure.value.status == "CANCELLED" and failure.value.query_id == QID


def test_a_throttled_poll_is_repeated_and_a_refused_one_cancels_the_query():
    client, stubber = _stubbed_client()
    sql = {"queryString": "SELECT 1"}
    stubber.add_response("start_protected_query", _query(QID, "SUBMITTED"), _start_params("results", "p", sql))
    stubber.add_client_error(
        "get_protected_query",
        service_error_code="ThrottlingException",
        http_status_code=400,
        expected_params=_get_params(QID),
    )
    stubber.add_client_error(
        "get_protected_query",
        service_error_code="InternalServerException",
        http_status_code=500,
        expected_params=_get_params(QID),
    )
    stubber.add_response(
        "get_protected_query",
        _query(QID, "SUCCESS", result={"output": {"s3": {"location": f"s3://results/p/{QID}/"}}}),
        _get_params(QID),
    )
    sleeps = []
    done = protected_query.run(
        client,
        membership_id=MEMBERSHIP,
        sql_parameters=sql,
        bucket="results",
        key_prefix="p",
        what="match",
        sleep=sleeps.append,
    )
    assert done.status == "SUCCESS" and sleeps == [5, 10]
    stubber.assert_no_pending_responses()

    client, stubber = _stubbed_client()
    stubber.add_response("start_protected_query", _query(QID, "SUBMITTED"), _start_params("results", "p", sql))
    stubber.add_client_error(
        "get_protected_query",
        service_error_code="AccessDeniedException",
        http_status_code=403,
        service_message="not authorized to perform cleanrooms:GetProtectedQuery",
        expected_params=_get_params(QID),
    )
    stubber.add_response(
        "update_protected_query", _query(QID, "CANCELLING"), {**_get_params(QID), "targetStatus": "CANCELLED"}
    )
    with pytest.raises(
        protected_query.ProtectedQueryFailed, match="could not follow .* cancelled: .*not authorized"
    ) as failure:
        protected_query.run(
            client,
            membership_id=MEMBERSHIP,
            sql_parameters=sql,
            bucket="results",
            key_prefix="p",
            what="match",
            sleep=lambda s: None,
        )
    assert failure.value.status == "CANCELLED"
    stubber.assert_no_pending_responses()


# ---------------------------------------------------------------------------- the resource, results from S3


def _parquet(path: Path, sql: str) -> Path:
    duckdb.sql(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    return path


def results_bucket(aws) -> str:
    """The bucket Clean Rooms writes results to: on Spark, one that holds no data source."""
    name = f"{aws['AUDIENCE_BUCKET'][:50]}-results"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_the_resource_reads_the_result_parts_from_s3_with_the_same_columns_as_local(tmp_path, aws):
    storage = S3Store(aws["AUDIENCE_BUCKET"], aws["AUDIENCE_KMS_KEY_ID"])
    results = S3Store(results_bucket(aws), aws["AUDIENCE_KMS_KEY_ID"])
    storage.upload(
        _parquet(tmp_path / "fp.parquet", "SELECT 'c1' AS customer_id, 'e1' AS hashed_email, 'p1' AS hashed_phone"),
        layout.CLEAN_ROOM_FIRST_PARTY,
    )
    storage.upload(
        _parquet(
            tmp_path / "p.parquet",
            "SELECT 'e1' AS hashed_email, NULL::VARCHAR AS hashed_phone, "
            "NULL::VARCHAR AS hashed_madid, 'Interest' AS segment_name, 'golf' AS segment_value",
        ),
        layout.partner_table("acme_data"),
    )
    prefix = "results/acme_data/run-1"
    location = f"s3://{results.bucket}/{prefix}/{QID}/"
    # the service writes several parts, with its own types (Spark writes customer ids as it found them)
    results.upload(
        _parquet(
            tmp_path / "a.parquet", "SELECT 'c1' AS customer_id, 'Interest' AS segment_name, 'golf' AS segment_value"
        ),
        f"{prefix}/{QID}/part-00000.snappy.parquet",
    )
    results.upload(
        _parquet(
            tmp_path / "b.parquet", "SELECT 'c2' AS customer_id, 'Age Band' AS segment_name, '25-34' AS segment_value"
        ),
        f"{prefix}/{QID}/part-00001.snappy.parquet",
    )
    results.put_bytes(f"{prefix}/{QID}/_SUCCESS", b"")
    client, stubber = _stubbed_client()
    config = load_config()
    arn = _arn("audience_match-acme")
    summary = {
        "arn": arn,
        "createTime": dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
        "id": "a1b2c3d4-0000-4000-8000-000000000001",
        "name": "audience_match-acme_data",
        "updateTime": dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
        "membershipArn": f"arn:aws:cleanrooms:us-east-1:{ACCOUNT}:membership/{MEMBERSHIP}",
        "membershipId": MEMBERSHIP,
        "collaborationArn": f"arn:aws:cleanrooms:us-east-1:{ACCOUNT}:collaboration/{MEMBERSHIP}",
        "collaborationId": MEMBERSHIP,
    }
    stubber.add_response(  # the partner's templates, found by their names
        "list_analysis_templates", {"analysisTemplateSummaries": [summary]}, {"membershipIdentifier": MEMBERSHIP}
    )
    stubber.add_response(
        "start_protected_query",
        _query(QID, "SUBMITTED"),
        _start_params(results.bucket, prefix, {"analysisTemplateArn": arn}),
    )
    stubber.add_response(
        "get_protected_query",
        _query(
            QID,
            "SUCCESS",
            result={"output": {"s3": {"location": location}}},
            statistics={"totalDurationInMillis": 1234},
        ),
        _get_params(QID),
    )
    # the membership holds no overlap_count template for the partner: the overlap count is not attempted

    class Stubbed(AwsCleanRoom):
        def client(self):
            return client

    result = Stubbed(membership_id=MEMBERSHIP, results_bucket=results.bucket, poll_first_seconds=0).match(
        storage, config, "acme_data", "run-1"
    )
    stubber.assert_no_pending_responses()
    assert (result.rows, result.matched_customers, result.first_party_customers) == (2, 2, 1)
    assert result.matched_partner_identities is None and result.query.duration_ms == 1234
    with storage.local_copy(layout.matches("acme_data")) as matches:
        schema = duckdb.sql(f"DESCRIBE SELECT * FROM '{matches}'").fetchall()
    assert [(c[0], c[1]) for c in schema] == [
        ("customer_id", "VARCHAR"),
        ("segment_name", "VARCHAR"),
        ("segment_value", "VARCHAR"),
    ]


def test_results_outside_the_results_bucket_are_refused(tmp_path, aws):
    storage = S3Store(aws["AUDIENCE_BUCKET"], aws["AUDIENCE_KMS_KEY_ID"])
    client, stubber = _stubbed_client()
    results = results_bucket(aws)
    prefix = "results/acme_data/run-2"
    sql = {"analysisTemplateArn": _arn("audience_match-acme")}
    stubber.add_response("start_protected_query", _query(QID, "SUBMITTED"), _start_params(results, prefix, sql))
    stubber.add_response(
        "get_protected_query",
        _query(QID, "SUCCESS", result={"output": {"s3": {"location": f"s3://someone-elses-bucket/{QID}/"}}}),
        _get_params(QID),
    )

    class Stubbed(AwsCleanRoom):
        def client(self):
            return client

    config = copy_config(tmp_path / "config")  # the partner's templates set by ARN: nothing is looked up
    partners = yaml.safe_load((config / "partners.yaml").read_text())
    partners["partners"]["acme_data"]["clean_room"] = {
        "match_template_arn": _arn("audience_match-acme"),
        "overlap_template_arn": _arn("overlap_count-acme"),
    }
    (config / "partners.yaml").write_text(yaml.safe_dump(partners, allow_unicode=True))
    with pytest.raises(protected_query.ProtectedQueryFailed, match="outside the results location"):
        Stubbed(membership_id=MEMBERSHIP, results_bucket=results, poll_first_seconds=0).match(
            storage, load_config(config), "acme_data", "run-2"
        )
