"""AWS Clean Rooms as a service on 127.0.0.1: the HTTP API (rest-json) of the operations this project calls
and its stack creates, so the production boto3 `cleanrooms` client runs unchanged against it
(`AWS_ENDPOINT_URL_CLEANROOMS`). No emulator covers protected queries; this one is written from the service's
documentation and botocore's model, and enforces what they document:

- every request and response is checked against botocore's model of the service (its enums too);
- the collaboration's engine is Spark (the only one since 2025-12-17): analysis rules are CUSTOM, templates are
  Spark SQL, and "the Results destination in Amazon S3 can't be within the same S3 bucket as any data source"
  (the receive-results page): such a StartProtectedQuery is a ValidationException;
- an analysis template may reference only tables associated with the collaboration; a query runs only a template
  every table it reads allows (`core.cleanroom.admission`), binding its parameters;
- a configured table reads its rows through its Glue table (database, table, S3 location) with boto3, as the
  service reads them through the data-access role; results are written as Parquet under
  `s3://bucket/keyPrefix/<query id>/`, encrypted as the bucket's default encryption says.

State lives in memory; `serve()` runs it in a thread (`python -m audience_assets.standins.cleanrooms_api`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import botocore.session
import sqlglot
from botocore.exceptions import ClientError, ParamValidationError
from sqlglot import exp

from audience_assets.core.cleanroom.admission import Parameter
from audience_assets.core.cleanroom.rules import AnalysisRuleInvalid, ConfiguredTable, rule_from_policy
from audience_assets.core.scratch import scratch
from audience_assets.standins.local_clean_room import AnalysisTemplate, Deliver, LocalCollaboration, _enum_errors

_MODEL = botocore.session.get_session().get_service_model("cleanrooms")
SPARK_RESULTS_RULE = "The Results destination in Amazon S3 can't be within the same S3 bucket as any data source."


class ServiceError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


class CleanRoomsService:
    """The service's state and operations, for one region of one AWS partition."""

    def __init__(self, *, region: str = "us-east-1", work_dir: Path | None = None):
        self.region, self.work_dir = region, work_dir
        self.collaborations: dict[str, dict[str, Any]] = {}
        self.memberships: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, dict[str, Any]] = {}
        self.associations: dict[str, dict[str, Any]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.queries: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []  # operations in the order they were called (tests read it)
        self._lock = threading.RLock()
        self.aws = boto3.session.Session()  # the service's own session: its reads are not the caller's calls

    def _arn(self, account: str, path: str) -> str:
        return f"arn:aws:cleanrooms:{self.region}:{account}:{path}"

    # ------------------------------------------------------------------ collaboration and membership
    def create_collaboration(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        engine = body.get("analyticsEngine", "SPARK")
        if engine != "SPARK":
            raise ServiceError(
                "ValidationException",
                "The Clean Rooms SQL analytics engine is no longer supported (since 2025-12-17): use SPARK",
            )
        collaboration_id = str(uuid.uuid4())
        members = [{"accountId": account, "memberAbilities": body["creatorMemberAbilities"]}, *body["members"]]
        self.collaborations[collaboration_id] = {
            "id": collaboration_id,
            "arn": self._arn(account, f"collaboration/{collaboration_id}"),
            "name": body["name"],
            "creatorAccountId": account,
            "creatorDisplayName": body["creatorDisplayName"],
            "createTime": _now(),
            "updateTime": _now(),
            "memberStatus": "ACTIVE",
            "queryLogStatus": body["queryLogStatus"],
            "analyticsEngine": engine,
            "members": {m["accountId"]: m for m in members},
        }
        return {"collaboration": self._collaboration_view(collaboration_id)}

    def _collaboration_view(self, collaboration_id: str) -> dict[str, Any]:
        c = self.collaborations[collaboration_id]
        return {k: c[k] for k in c if k != "members"}

    def create_membership(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        collaboration = self._find_collaboration(body["collaborationIdentifier"])
        member = collaboration["members"].get(account)
        if member is None:
            raise ServiceError("AccessDeniedException", f"account {account} is not a member of the collaboration")
        membership_id = str(uuid.uuid4())
        self.memberships[membership_id] = {
            "id": membership_id,
            "arn": self._arn(account, f"membership/{membership_id}"),
            "account": account,
            "collaborationId": collaboration["id"],
            "collaborationArn": collaboration["arn"],
            "collaborationCreatorAccountId": collaboration["creatorAccountId"],
            "collaborationCreatorDisplayName": collaboration["creatorDisplayName"],
            "collaborationName": collaboration["name"],
            "createTime": _now(),
            "updateTime": _now(),
            "status": "ACTIVE",
            "memberAbilities": member["memberAbilities"],
            "queryLogStatus": body["queryLogStatus"],
            "paymentConfiguration": {"queryCompute": {"isResponsible": True}},
            **(
                {"defaultResultConfiguration": body["defaultResultConfiguration"]}
                if "defaultResultConfiguration" in body
                else {}
            ),
        }
        return {"membership": self._membership_view(membership_id)}

    def _membership_view(self, membership_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.memberships[membership_id].items() if k != "account"}

    def _find_collaboration(self, identifier: str) -> dict[str, Any]:
        found = next((c for c in self.collaborations.values() if identifier in (c["id"], c["arn"])), None)
        if found is None:
            raise ServiceError("ResourceNotFoundException", f"collaboration {identifier} not found", 404)
        return found

    def _membership(self, identifier: str, account: str) -> dict[str, Any]:
        found = next((m for m in self.memberships.values() if identifier in (m["id"], m["arn"])), None)
        if found is None or found["account"] != account:
            raise ServiceError("ResourceNotFoundException", f"membership {identifier} not found", 404)
        return found

    # ------------------------------------------------------------------ configured tables
    def create_configured_table(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        glue = body["tableReference"].get("glue")
        if glue is None:
            raise ServiceError("ValidationException", "only Glue table references are modelled here")
        columns = [c["Name"] for c in self._glue_table(glue)["StorageDescriptor"]["Columns"]]
        unknown = sorted(set(body["allowedColumns"]) - set(columns))
        if unknown:
            raise ServiceError("ValidationException", f"allowedColumns {unknown} are not columns of the Glue table")
        table_id = str(uuid.uuid4())
        self.tables[table_id] = {
            "id": table_id,
            "arn": self._arn(account, f"configuredtable/{table_id}"),
            "name": body["name"],
            "tableReference": body["tableReference"],
            "createTime": _now(),
            "updateTime": _now(),
            "analysisRuleTypes": [],
            "analysisMethod": body["analysisMethod"],
            "allowedColumns": body["allowedColumns"],
            "account": account,
            "rule": None,
        }
        return {"configuredTable": self._table_view(table_id)}

    def _table_view(self, table_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.tables[table_id].items() if k not in ("account", "rule")}

    def _table(self, identifier: str, account: str) -> dict[str, Any]:
        found = next((t for t in self.tables.values() if identifier in (t["id"], t["arn"])), None)
        if found is None or found["account"] != account:
            raise ServiceError("ResourceNotFoundException", f"configured table {identifier} not found", 404)
        return found

    def put_analysis_rule(self, account: str, table_id: str, body: dict[str, Any], rule_type: str) -> dict[str, Any]:
        table = self._table(table_id, account)
        if rule_type != "CUSTOM":
            raise ServiceError(
                "ValidationException",
                f"{rule_type} analysis rules belong to the Clean Rooms SQL engine, retired on 2025-12-17; Spark "
                "collaborations take CUSTOM rules",
            )
        policy = body["analysisRulePolicy"]["v1"]
        try:
            rule_from_policy(policy, tuple(table["allowedColumns"]))
        except AnalysisRuleInvalid as error:
            raise ServiceError("ValidationException", str(error)) from None
        table["rule"] = {"type": rule_type, "policy": policy, "createTime": _now(), "updateTime": _now()}
        table["analysisRuleTypes"] = [rule_type]
        return {
            "analysisRule": {
                "configuredTableId": table["id"],
                "configuredTableArn": table["arn"],
                "policy": {"v1": policy},
                "type": rule_type,
                "createTime": table["rule"]["createTime"],
                "updateTime": _now(),
            }
        }

    def _glue_table(self, glue: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.aws.client("glue", region_name=self.region).get_table(
                DatabaseName=glue["databaseName"], Name=glue["tableName"]
            )["Table"]
        except ClientError as error:
            raise ServiceError("ValidationException", f"Glue table {glue}: {error}") from None

    # ------------------------------------------------------------------ associations and templates
    def create_association(self, account: str, membership_id: str, body: dict[str, Any]) -> dict[str, Any]:
        membership = self._membership(membership_id, account)
        table = self._table(body["configuredTableIdentifier"], account)
        if any(
            a["name"] == body["name"]
            and self.memberships[a["membershipId"]]["collaborationId"] == membership["collaborationId"]
            for a in self.associations.values()
        ):
            raise ServiceError("ConflictException", f"the collaboration already has a table named {body['name']}", 409)
        association_id = str(uuid.uuid4())
        self.associations[association_id] = {
            "arn": self._arn(account, f"membership/{membership['id']}/configuredtableassociation/{association_id}"),
            "id": association_id,
            "configuredTableId": table["id"],
            "configuredTableArn": table["arn"],
            "membershipId": membership["id"],
            "membershipArn": membership["arn"],
            "roleArn": body["roleArn"],
            "name": body["name"],
            "createTime": _now(),
            "updateTime": _now(),
        }
        return {"configuredTableAssociation": dict(self.associations[association_id])}

    def _collaboration_tables(self, collaboration_id: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """Association name -> (association, configured table), across every member of the collaboration."""
        return {
            a["name"]: (a, self.tables[a["configuredTableId"]])
            for a in self.associations.values()
            if self.memberships[a["membershipId"]]["collaborationId"] == collaboration_id
        }

    def create_template(self, account: str, membership_id: str, body: dict[str, Any]) -> dict[str, Any]:
        membership = self._membership(membership_id, account)
        if body["format"] != "SQL":
            raise ServiceError("ValidationException", "only SQL analysis templates are modelled here")
        text = body["source"]["text"]
        try:
            tree = sqlglot.parse_one(text, read="spark")
        except sqlglot.errors.SqlglotError as error:
            raise ServiceError("ValidationException", f"the template is not valid Spark SQL: {error}") from None
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        referenced = sorted({t.name for t in tree.find_all(exp.Table) if t.name not in ctes})
        associated = self._collaboration_tables(membership["collaborationId"])
        missing = [t for t in referenced if t not in associated]
        if missing:
            raise ServiceError("ValidationException", f"Table(s) {missing} are not associated with the collaboration")
        template_id = str(uuid.uuid4())
        self.templates[template_id] = {
            "id": template_id,
            "arn": f"{membership['arn']}/analysistemplate/{template_id}",
            "collaborationId": membership["collaborationId"],
            "collaborationArn": membership["collaborationArn"],
            "membershipId": membership["id"],
            "membershipArn": membership["arn"],
            "name": body["name"],
            "createTime": _now(),
            "updateTime": _now(),
            "schema": {"referencedTables": referenced},
            "format": "SQL",
            "source": {"text": text},
            "analysisParameters": body.get("analysisParameters", []),
        }
        return {"analysisTemplate": dict(self.templates[template_id])}

    def list_templates(self, account: str, membership_id: str) -> dict[str, Any]:
        membership = self._membership(membership_id, account)
        keys = ("arn", "createTime", "id", "name", "updateTime", "membershipArn", "membershipId")
        keys += ("collaborationArn", "collaborationId")
        return {
            "analysisTemplateSummaries": [
                {k: t[k] for k in keys} for t in self.templates.values() if t["membershipId"] == membership["id"]
            ]
        }

    # ------------------------------------------------------------------ protected queries
    def start_query(self, account: str, membership_id: str, body: dict[str, Any]) -> dict[str, Any]:
        membership = self._membership(membership_id, account)
        if "CAN_QUERY" not in membership["memberAbilities"]:
            raise ServiceError("AccessDeniedException", "this member cannot run queries (no CAN_QUERY ability)")
        output = _results_destination(body, membership)
        tables = self._collaboration_tables(membership["collaborationId"])
        sources = {self._location(t)[0] for _, t in tables.values()}
        if output["bucket"] in sources:
            raise ServiceError("ValidationException", SPARK_RESULTS_RULE)
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(scratch("cleanrooms-service")))
            room = LocalCollaboration(
                membership_id=membership["id"],
                account_id=account,
                tables=self._configured_tables(tables, work),
                templates=self._collaboration_templates(membership["collaborationId"]),
                work_dir=work / "engine",
                deliver=self._deliverer(output),
            )
            room.membership_arn = membership["arn"]
            query = _start_in(room, membership, body, output)
        self.queries[query["id"]] = {**query, "account": account, "polls": 0}
        return {"protectedQuery": {**_json_query(query), "status": "SUBMITTED"}}

    def _configured_tables(
        self, tables: dict[str, tuple[dict[str, Any], dict[str, Any]]], work: Path
    ) -> list[ConfiguredTable]:
        """The collaboration's tables as the local engine reads them, each downloaded under `work`."""
        return [
            ConfiguredTable(
                name,
                folder,
                tuple(table["allowedColumns"]),
                rule_from_policy(table["rule"]["policy"], tuple(table["allowedColumns"])),
                table["account"],
            )
            for name, (_, table) in tables.items()
            # a table without a rule cannot be queried (the user guide); one with no rows yet is not read
            if table["rule"] is not None and (folder := self._download(table, work / name)) is not None
        ]

    def _collaboration_templates(self, collaboration_id: str) -> list[AnalysisTemplate]:
        """Every analysis template created in the collaboration, any member's: a query may run any of them."""
        return [
            AnalysisTemplate(
                t["arn"],
                t["name"],
                t["source"]["text"],
                tuple(Parameter(p["name"], p["type"], p.get("defaultValue")) for p in t["analysisParameters"]),
            )
            for t in self.templates.values()
            if t["collaborationId"] == collaboration_id
        ]

    def _deliverer(self, output: dict[str, Any]) -> Deliver:
        """How the engine hands over a result: uploaded to the S3 destination `output` (bucket, keyPrefix),
        encrypted as that bucket's default encryption says; returns the result's location."""

        def deliver(path: Path, key_prefix: str) -> str:
            key = f"{key_prefix}/part-00000.snappy.parquet"
            s3 = self.aws.client("s3", region_name=self.region)
            s3.upload_file(str(path), output["bucket"], key, ExtraArgs=_default_encryption(s3, output["bucket"]))
            return f"s3://{output['bucket']}/{key_prefix}/"

        return deliver

    def get_query(self, account: str, membership_id: str, query_id: str) -> dict[str, Any]:
        membership = self._membership(membership_id, account)
        query = self.queries.get(query_id)
        if query is None or query["membershipId"] != membership["id"]:
            raise ServiceError("ResourceNotFoundException", f"protected query {query_id} not found", 404)
        query["polls"] += 1
        shown = _json_query(query)
        if query["polls"] == 1 and query["status"] == "SUCCESS":  # a poll sees it running before it ends
            shown = {k: v for k, v in shown.items() if k not in ("result", "statistics")} | {"status": "STARTED"}
        return {"protectedQuery": shown}

    def cancel_query(self, account: str, membership_id: str, query_id: str) -> dict[str, Any]:
        self.get_query(account, membership_id, query_id)
        query = self.queries[query_id]
        if query["status"] in ("SUCCESS", "FAILED", "TIMED_OUT", "CANCELLED") and query["polls"] > 1:
            raise ServiceError("ConflictException", f"protected query {query_id} already ended {query['status']}", 409)
        query.update(status="CANCELLED")
        query.pop("result", None)
        return {"protectedQuery": {**_json_query(query), "status": "CANCELLING"}}

    # ------------------------------------------------------------------ reading a table as the service does
    def _location(self, table: dict[str, Any]) -> tuple[str, str]:
        location = self._glue_table(table["tableReference"]["glue"])["StorageDescriptor"]["Location"]
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        return bucket, prefix

    def _download(self, table: dict[str, Any], folder: Path) -> Path | None:
        """The table's Parquet objects under its Glue location, in `folder` (None: it holds none yet)."""
        bucket, prefix = self._location(table)
        s3 = self.aws.client("s3", region_name=self.region)
        parts = [item["Key"] for item in _objects(s3, bucket, prefix) if item["Key"].endswith(".parquet")]
        if not parts:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        for number, key in enumerate(parts):
            s3.download_file(bucket, key, str(folder / f"part-{number:05d}.parquet"))
        return folder


def _objects(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def _default_encryption(s3: Any, bucket: str) -> dict[str, str]:
    """What S3's default encryption would apply to a write without headers (the stand-in writes explicitly)."""
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError:
        return {}
    default = rules[0]["ApplyServerSideEncryptionByDefault"] if rules else {}
    if default.get("SSEAlgorithm") == "aws:kms":
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": default.get("KMSMasterKeyID", "")}
    return {}


def _results_destination(body: dict[str, Any], membership: dict[str, Any]) -> dict[str, Any]:
    """Where a query's results go: the request's S3 output, else the membership's default; a query needs one."""
    output = (
        (body.get("resultConfiguration") or membership.get("defaultResultConfiguration") or {})
        .get("outputConfiguration", {})
        .get("s3")
    )
    if output is None:
        raise ServiceError(
            "ValidationException", "no result configuration: give resultConfiguration.outputConfiguration.s3"
        )
    return output


def _start_in(
    room: LocalCollaboration, membership: dict[str, Any], body: dict[str, Any], output: dict[str, Any]
) -> dict[str, Any]:
    """Run the request in the local engine `room`, its refusals turned into the service's errors; the query it
    recorded."""
    output_configuration = {"outputConfiguration": {"s3": output}}
    request = {**body, "membershipIdentifier": membership["id"], "resultConfiguration": output_configuration}
    try:
        started = room.start_protected_query(**request)["protectedQuery"]
    except ClientError as error:
        raise ServiceError(error.response["Error"]["Code"], error.response["Error"]["Message"]) from None
    return dict(room.queries[started["id"]])


def _json_query(query: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "membershipId", "membershipArn", "createTime", "sqlParameters", "status", "resultConfiguration")
    shown = {k: query[k] for k in keep if k in query}
    for extra in ("result", "statistics", "error"):
        if extra in query:
            shown[extra] = query[extra]
    if isinstance(shown.get("createTime"), dt.datetime):
        shown["createTime"] = shown["createTime"].timestamp()
    return shown


# ---------------------------------------------------------------------------- the HTTP face

_ROUTES: list[tuple[str, re.Pattern[str], str]] = []


def _route(method: str, pattern: str, operation: str) -> None:
    _ROUTES.append((method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"), operation))


for _name in (
    "CreateCollaboration",
    "CreateMembership",
    "GetMembership",
    "CreateConfiguredTable",
    "CreateConfiguredTableAnalysisRule",
    "UpdateConfiguredTableAnalysisRule",
    "CreateConfiguredTableAssociation",
    "CreateAnalysisTemplate",
    "ListAnalysisTemplates",
    "StartProtectedQuery",
    "GetProtectedQuery",
    "UpdateProtectedQuery",
):
    _op = _MODEL.operation_model(_name)
    _route(_op.http["method"], _op.http["requestUri"].split("?")[0], _name)


def _account_of(headers: Any) -> str:
    """The caller's account, from the access key id of its SigV4 signature (`<account>` or `AKIA...`: the default)."""
    match = re.search(r"Credential=([^/,]+)/", headers.get("Authorization", ""))
    key = match.group(1) if match else ""
    return key if key.isdigit() and len(key) == 12 else "123456789012"


def dispatch(
    service: CleanRoomsService, method: str, path: str, query: dict[str, str], body: dict[str, Any], account: str
) -> tuple[int, dict[str, Any]]:
    for verb, pattern, operation in _ROUTES:
        match = pattern.match(path)
        if verb != method or not match:
            continue
        params = {k: unquote(v) for k, v in match.groupdict().items()}
        numbers = {k: int(v) for k, v in query.items() if k == "maxResults" and v.isdigit()}
        request = {**body, **params, **query, **numbers}
        service.calls.append(operation)
        try:
            _validate(operation, request)
            with service._lock:
                response = _call(service, operation, account, params, body)
            _check(operation, response)
            return 200, response
        except ServiceError as error:
            return error.status, {"__type": error.code, "message": error.message}
        except ParamValidationError as error:
            return 400, {"__type": "ValidationException", "message": str(error)}
    return 404, {"__type": "UnknownOperationException", "message": f"{method} {path}"}


def _call(
    service: CleanRoomsService, operation: str, account: str, params: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    membership = params.get("membershipIdentifier", "")
    match operation:
        case "CreateCollaboration":
            return service.create_collaboration(account, body)
        case "CreateMembership":
            return service.create_membership(account, body)
        case "GetMembership":
            return {"membership": service._membership_view(service._membership(membership, account)["id"])}
        case "CreateConfiguredTable":
            return service.create_configured_table(account, body)
        case "CreateConfiguredTableAnalysisRule":
            return service.put_analysis_rule(
                account, params["configuredTableIdentifier"], body, body["analysisRuleType"]
            )
        case "UpdateConfiguredTableAnalysisRule":
            return service.put_analysis_rule(
                account, params["configuredTableIdentifier"], body, params["analysisRuleType"]
            )
        case "CreateConfiguredTableAssociation":
            return service.create_association(account, membership, body)
        case "CreateAnalysisTemplate":
            return service.create_template(account, membership, body)
        case "ListAnalysisTemplates":
            return service.list_templates(account, membership)
        case "StartProtectedQuery":
            return service.start_query(account, membership, body)
        case "GetProtectedQuery":
            return service.get_query(account, membership, params["protectedQueryIdentifier"])
        case "UpdateProtectedQuery":
            return service.cancel_query(account, membership, params["protectedQueryIdentifier"])
    raise ServiceError("UnknownOperationException", operation)


def _validate(operation: str, request: dict[str, Any]) -> None:
    from botocore.validate import ParamValidator

    shape = _MODEL.operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    problems = list(_enum_errors(request, shape, operation))
    if report.has_errors() or problems:
        raise ParamValidationError(report="\n".join(filter(None, [report.generate_report(), *problems])))


def _check(operation: str, response: dict[str, Any]) -> None:
    """A response that breaks the model is this stand-in's bug: fail loudly (in its own thread's log)."""
    shape = _MODEL.operation_model(operation).output_shape
    problems = list(_enum_errors(response, shape, operation))
    if problems:
        raise AssertionError(f"{operation} response breaks the service model: {problems}")


class CleanRoomsServer:
    """The service on a loopback port, in a background thread; a context manager."""

    def __init__(self, service: CleanRoomsService | None = None, host: str = "127.0.0.1", port: int = 0):
        self.service = service or CleanRoomsService()
        service = self.service

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw.strip() else {}
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                status, payload = dispatch(service, self.command, split.path, query, body, _account_of(self.headers))
                data = json.dumps(payload, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status >= 400:
                    self.send_header("x-amzn-ErrorType", payload.get("__type", "ServiceException"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:  # quiet: tests read `service.calls`
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="cleanrooms-api")

    def __enter__(self) -> CleanRoomsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
