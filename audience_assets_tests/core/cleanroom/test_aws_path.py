"""The AWS Clean Rooms path: the real boto3 `cleanrooms` client behind botocore's Stubber (every request is
validated and serialized against the service model, every stubbed response checked against it), with
results in S3 on a moto server on 127.0.0.1.

The Stubber never sends anything; the client's endpoint is a closed loopback port all the same, so a call
that escaped the stubs would fail here rather than reach AWS.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import pytest
import yaml
from botocore.stub import Stubber
from dagster._core.errors import DagsterExecutionInterruptedError

from audience_assets.cli import run_pipeline
from audience_assets.core import layout
from audience_assets.core.cleanroom import protected_query
from audience_assets.core.cleanroom.rules import ConfiguredTable, rule_from_policy
from audience_assets.core.cleanroom.tables import MATCH_COLUMNS, PARTNER_COLUMNS, PARTNER_IDENTITY, first_party_columns
from audience_assets.core.cleanroom.templates import render_match, render_overlap
from audience_assets.core.config import load_config
from audience_assets.core.demo import generate
from audience_assets.core.settings import Settings
from audience_assets.core.store import LocalStore, S3Store
from audience_assets.defs.resources import AwsCleanRoom
from audience_assets.standins.local_clean_room import AnalysisTemplate, LocalCollaboration
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


def test_the_resource_reads_the_result_parts_from_s3_with_the_same_columns_as_local(tmp_path, aws):
    storage = S3Store(aws["AUDIENCE_BUCKET"], aws["AUDIENCE_KMS_KEY_ID"])
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
    prefix = f"{layout.clean_room_results('acme_data')}run-1"
    location = f"s3://{aws['AUDIENCE_BUCKET']}/{prefix}/{QID}/"
    # the service writes several parts, with its own types (Spark writes customer ids as it found them)
    storage.upload(
        _parquet(
            tmp_path / "a.parquet", "SELECT 'c1' AS customer_id, 'Interest' AS segment_name, 'golf' AS segment_value"
        ),
        f"{prefix}/{QID}/part-00000.snappy.parquet",
    )
    storage.upload(
        _parquet(
            tmp_path / "b.parquet", "SELECT 'c2' AS customer_id, 'Age Band' AS segment_name, '25-34' AS segment_value"
        ),
        f"{prefix}/{QID}/part-00001.snappy.parquet",
    )
    storage.put_bytes(f"{prefix}/{QID}/_SUCCESS", b"")
    client, stubber = _stubbed_client()
    config = load_config()
    arn = _arn("audience_match-acme")
    stubber.add_response(
        "start_protected_query",
        _query(QID, "SUBMITTED"),
        _start_params(aws["AUDIENCE_BUCKET"], prefix, {"analysisTemplateArn": arn}),
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
    # no overlap template configured and the match ran as a template: the overlap count is not attempted

    class Stubbed(AwsCleanRoom):
        def client(self):
            return client

    result = Stubbed(membership_id=MEMBERSHIP, analysis_template_arn=arn, poll_first_seconds=0).match(
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


def test_results_outside_the_bucket_are_refused(tmp_path, aws):
    storage = S3Store(aws["AUDIENCE_BUCKET"], aws["AUDIENCE_KMS_KEY_ID"])
    client, stubber = _stubbed_client()
    prefix = f"{layout.clean_room_results('acme_data')}run-2"
    sql = {"queryString": render_match("acme_data", ["EMAIL", "PHONE"])}
    stubber.add_response(
        "start_protected_query", _query(QID, "SUBMITTED"), _start_params(aws["AUDIENCE_BUCKET"], prefix, sql)
    )
    stubber.add_response(
        "get_protected_query",
        _query(QID, "SUCCESS", result={"output": {"s3": {"location": f"s3://someone-elses-bucket/{QID}/"}}}),
        _get_params(QID),
    )

    class Stubbed(AwsCleanRoom):
        def client(self):
            return client

    with pytest.raises(protected_query.ProtectedQueryFailed, match="outside the configured store"):
        Stubbed(membership_id=MEMBERSHIP, poll_first_seconds=0).match(storage, load_config(), "acme_data", "run-2")


# ---------------------------------------------------------------------------- the whole graph: aws mode == local mode


class CleanRoomsService:
    """AWS Clean Rooms as this test plays it: each call goes through the real, stubbed client; the answer
    is computed by running the query on the local engine over the tables the pipeline published in S3,
    with the results written to S3 where the service would write them."""

    def __init__(self, storage: S3Store, config, templates: dict[str, tuple[str, str]], work: Path):
        self.client, self.stubber = _stubbed_client()
        self.storage, self.config, self.templates, self.work = storage, config, templates, work
        self.pending: dict[str, list[dict]] = {}
        self.started: list[dict] = []

    def _room(self) -> LocalCollaboration:
        partners = list(self.config.partners)
        keys = self.config.match_keys
        self.work.mkdir(parents=True, exist_ok=True)
        tables = []
        for name, key in [
            ("first_party", layout.CLEAN_ROOM_FIRST_PARTY),
            *((p, layout.partner_table(p)) for p in partners),
        ]:
            if not any(True for _ in self.storage.list(key)):
                continue  # that partner has not published its table yet
            path = self.work / f"{name}.parquet"
            self.storage.client().download_file(self.storage.bucket, key, str(path))
            owned = [arn for arn, (partner, _) in self.templates.items() if name in ("first_party", partner)]
            columns = first_party_columns(keys) if name == "first_party" else PARTNER_COLUMNS
            hashed = [c for c in columns if c in (*MATCH_COLUMNS.values(), PARTNER_IDENTITY)]
            rule = rule_from_policy({"custom": {"allowedAnalyses": owned, "disallowedOutputColumns": hashed}}, columns)
            tables.append(
                ConfiguredTable(name, path, columns, rule, ACCOUNT if name == "first_party" else "210987654321")
            )
        templates = [AnalysisTemplate(arn, arn.rsplit("/", 1)[1], sql) for arn, (_, sql) in self.templates.items()]

        def deliver(path: Path, key_prefix: str) -> str:
            self.storage.upload(path, f"{key_prefix}/part-00000.parquet")
            return f"s3://{self.storage.bucket}/{key_prefix}/"

        return LocalCollaboration(
            membership_id=MEMBERSHIP,
            account_id=ACCOUNT,
            tables=tables,
            templates=templates,
            work_dir=self.work / "engine",
            deliver=deliver,
        )

    def start_protected_query(self, **request):
        room = self._room()
        submitted = room.start_protected_query(**request)
        query_id = submitted["protectedQuery"]["id"]
        final = room.get_protected_query(membershipIdentifier=MEMBERSHIP, protectedQueryIdentifier=query_id)
        self.started.append(request)
        self.stubber.add_response("start_protected_query", submitted, request)
        self.pending[query_id] = [
            {"protectedQuery": {**final["protectedQuery"], "status": "STARTED", "result": None, "statistics": None}},
            final,
        ]
        return self.client.start_protected_query(**request)

    def get_protected_query(self, **request):
        response = self.pending[request["protectedQueryIdentifier"]].pop(0)
        response = {"protectedQuery": {k: v for k, v in response["protectedQuery"].items() if v is not None}}
        self.stubber.add_response("get_protected_query", response, request)
        return self.client.get_protected_query(**request)


def _members(read, audience: str) -> list[tuple]:
    with read(layout.audience_members(audience)) as path:
        return duckdb.sql(f"SELECT * FROM '{path}' ORDER BY ALL").fetchall()


@pytest.mark.slow
def test_aws_mode_produces_the_same_audiences_as_local_mode(tmp_path, aws, monkeypatch):
    landing = tmp_path / "demo"
    generate(landing, customers=6_000, seed=11)
    config_dir = copy_config(tmp_path / "config")
    partners_file = config_dir / "partners.yaml"
    data = yaml.safe_load(partners_file.read_text())
    templates = {}
    config = load_config(config_dir)
    for partner, contract in config.partners.items():
        match_arn, overlap_arn = _arn(f"audience_match-{partner}"), _arn(f"overlap_count-{partner}")
        data["partners"][partner]["clean_room"] = {"match_template_arn": match_arn, "overlap_template_arn": overlap_arn}
        templates[match_arn] = (partner, render_match(partner, contract.match_keys))
        templates[overlap_arn] = (partner, render_overlap(partner, contract.match_keys))
    partners_file.write_text(yaml.safe_dump(data, allow_unicode=True))

    # local mode
    local_dir = tmp_path / "local"
    shutil.copytree(landing / "landing", local_dir / "landing")
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_pipeline(Settings(env="local", data_dir=local_dir, config_dir=config_dir, demo_data=False), instance)
    local = LocalStore(str(local_dir))

    # aws mode: the same landing zone in the moto bucket, Clean Rooms behind the Stubber
    s3 = boto3.client("s3")
    for path in sorted((landing / "landing").rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), aws["AUDIENCE_BUCKET"], path.relative_to(landing).as_posix())
    for name in ("AUDIENCE_BUCKET", "AUDIENCE_KMS_KEY_ID"):
        monkeypatch.setenv(name, aws[name])
    storage = S3Store(aws["AUDIENCE_BUCKET"], aws["AUDIENCE_KMS_KEY_ID"])
    service = CleanRoomsService(storage, load_config(config_dir), templates, tmp_path / "service")

    class Stubbed(AwsCleanRoom):
        def client(self):
            return service

    settings = Settings(env="aws", data_dir=tmp_path / "aws-local", config_dir=config_dir, demo_data=False)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_pipeline(
            settings,
            instance,
            resources={"clean_room": Stubbed(membership_id=MEMBERSHIP, poll_first_seconds=0, poll_longest_seconds=0)},
        )
    service.stubber.assert_no_pending_responses()
    assert [r["sqlParameters"]["analysisTemplateArn"] for r in service.started] == [
        _arn(f"{t}-{p}") for p in sorted(config.partners) for t in ("audience_match", "overlap_count")
    ]
    assert all(
        r["resultConfiguration"]["outputConfiguration"]["s3"]["bucket"] == aws["AUDIENCE_BUCKET"]
        for r in service.started
    )

    for audience in config.audiences:
        local_members = _members(local.local_copy, audience)
        assert len(local_members) >= 100
        assert _members(storage.local_copy, audience) == local_members
    for partner in config.partners:
        with local.local_copy(layout.matches(partner)) as a, storage.local_copy(layout.matches(partner)) as b:
            assert (
                duckdb.sql(f"SELECT * FROM '{a}' ORDER BY ALL").fetchall()
                == duckdb.sql(f"SELECT * FROM '{b}' ORDER BY ALL").fetchall()
            )
