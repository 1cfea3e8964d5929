"""A local clean room: one membership of a collaboration, answering the protected-query calls of the boto3
`cleanrooms` client (`start_protected_query`, `get_protected_query`, `update_protected_query`) with the
service's request and response shapes, so the driver that runs queries on AWS runs them here unchanged.

Every request and response is checked against botocore's model of the service (plus its enums, which
botocore's validator skips). Queries are admitted against the tables' analysis rules
(`admission.admit`), run in DuckDB over the tables' Parquet, and their results are delivered as Parquet.
A rejected query ends FAILED with the reason in `error.message`, as the console shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import botocore.session
from botocore.exceptions import ClientError, ParamValidationError
from botocore.validate import ParamValidator

from audience_assets.core import layout
from audience_assets.core.cleanroom import collaboration
from audience_assets.core.cleanroom.admission import Parameter, QueryRejected, admit
from audience_assets.core.cleanroom.match import MatchSession, partner_table
from audience_assets.core.cleanroom.protected_query import TERMINAL
from audience_assets.core.cleanroom.rules import ConfiguredTable
from audience_assets.core.cleanroom.tables import FIRST_PARTY_TABLE, PARTNER_COLUMNS, first_party_columns
from audience_assets.core.config import ProjectConfig
from audience_assets.core.duck import connect, ident, sql_path
from audience_assets.core.store import Store

MAX_RUNNING = 5  # concurrent ongoing queries per membership (not adjustable)
_MODEL = botocore.session.get_session().get_service_model("cleanrooms")


@dataclasses.dataclass(frozen=True)
class AnalysisTemplate:
    arn: str
    name: str
    sql: str
    parameters: tuple[Parameter, ...] = ()


# (local Parquet file, key prefix of this query's results) -> the location reported in result.output.s3
Deliver = Callable[[Path, str], str]


class LocalCollaboration:
    """The membership `membership_id` of account `account_id`, with its configured tables and templates."""

    def __init__(
        self,
        *,
        membership_id: str,
        account_id: str,
        tables: Iterable[ConfiguredTable],
        templates: Iterable[AnalysisTemplate],
        work_dir: Path,
        deliver: Deliver | None = None,
    ):
        self.membership_id, self.account_id = membership_id, account_id
        self.membership_arn = f"arn:aws:cleanrooms:local:{account_id}:membership/{membership_id}"
        self.tables = {t.name: t for t in tables}
        self.templates = {t.arn: t for t in templates}
        self.work_dir = work_dir
        self.deliver = deliver or self._deliver_to_folder
        self.queries: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ the client surface

    def start_protected_query(self, **request: Any) -> dict[str, Any]:
        self._validate("StartProtectedQuery", request)
        self._membership(request["membershipIdentifier"], "StartProtectedQuery")
        running = sum(q["status"] not in TERMINAL for q in self.queries.values())
        if running >= MAX_RUNNING:
            raise _error(
                "ServiceQuotaExceededException",
                f"{running} queries are already running in this membership",
                "StartProtectedQuery",
            )
        parameters = request["sqlParameters"]
        if not ("queryString" in parameters) ^ ("analysisTemplateArn" in parameters):
            raise _error(
                "ValidationException",
                "sqlParameters needs exactly one of queryString or analysisTemplateArn",
                "StartProtectedQuery",
            )
        output = request.get("resultConfiguration", {}).get("outputConfiguration", {}).get("s3")
        if output is None:
            raise _error(
                "ValidationException",
                "this membership has no default result configuration: give resultConfiguration.outputConfiguration.s3",
                "StartProtectedQuery",
            )
        query_id = str(uuid.uuid4())
        query = {
            "id": query_id,
            "membershipId": self.membership_id,
            "membershipArn": self.membership_arn,
            "createTime": dt.datetime.now(dt.UTC),
            "status": "SUBMITTED",
            "sqlParameters": parameters,
            "resultConfiguration": request["resultConfiguration"],
        }
        self.queries[query_id], self.history[query_id] = query, ["SUBMITTED"]
        response = {"protectedQuery": dict(query)}
        self._run(query, output)
        return self._checked("StartProtectedQuery", response)

    def get_protected_query(self, **request: Any) -> dict[str, Any]:
        query = self._query("GetProtectedQuery", request)
        return self._checked("GetProtectedQuery", {"protectedQuery": dict(query)})

    def update_protected_query(self, **request: Any) -> dict[str, Any]:
        query = self._query("UpdateProtectedQuery", request)
        if query["status"] in TERMINAL:
            raise _error(
                "ConflictException",
                f"protected query {query['id']} already ended {query['status']}",
                "UpdateProtectedQuery",
            )
        self._move(query, "CANCELLING")
        self._move(query, "CANCELLED")
        return self._checked("UpdateProtectedQuery", {"protectedQuery": dict(query)})

    # ------------------------------------------------------------------ execution

    def _run(self, query: dict[str, Any], output: Mapping[str, Any]) -> None:
        started = time.monotonic()
        self._move(query, "STARTED")
        parameters = query["sqlParameters"]
        try:
            if "analysisTemplateArn" in parameters:
                template = self.templates.get(parameters["analysisTemplateArn"])
                if template is None:
                    raise QueryRejected(
                        f"analysis template {parameters['analysisTemplateArn']} does not exist in this membership"
                    )
                sql = admit(
                    template.sql,
                    self.tables,
                    runner=self.account_id,
                    template_arn=template.arn,
                    parameters=parameters.get("parameters", {}),
                    declared=template.parameters,
                )
            else:
                sql = admit(parameters["queryString"], self.tables, runner=self.account_id)
            key_prefix = f"{output['keyPrefix'].strip('/')}/{query['id']}" if output.get("keyPrefix") else query["id"]
            location = self.deliver(self._execute(query["id"], sql, output["resultFormat"]), key_prefix)
        except QueryRejected as error:
            query["error"] = {"code": "QUERY_REJECTED", "message": str(error)}
            self._move(query, "FAILED")
        except Exception as error:  # the engine failed on admitted SQL. Its own message may quote table values
            # ("Could not convert string 'jane@example.com'"), and nothing of the tables leaves but results.
            query["error"] = {
                "code": "EXECUTION_FAILED",
                "message": f"the query failed while running ({type(error).__name__}); the engine's "
                "message is withheld because it may quote values from the tables",
            }
            self._move(query, "FAILED")
        else:
            query["result"] = {"output": {"s3": {"location": location}}}
            self._move(query, "SUCCESS")
        query["statistics"] = {"totalDurationInMillis": int((time.monotonic() - started) * 1000)}

    def _execute(self, query_id: str, sql: str, result_format: str) -> Path:
        out = self.work_dir / query_id / ("part-00000.parquet" if result_format == "PARQUET" else "part-00000.csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        options = "FORMAT parquet" if result_format == "PARQUET" else "FORMAT csv, HEADER true"
        with connect(self.work_dir / "spill") as con:
            files, folders = [str(out.parent) + "/"], []
            for table in self.tables.values():
                source = table.path / "*.parquet" if table.path.is_dir() else table.path
                (folders if table.path.is_dir() else files).append(
                    str(table.path) + ("/" if table.path.is_dir() else "")
                )
                columns = ", ".join(ident(c) for c in table.columns)  # only the allowed columns exist in the room
                con.execute(
                    f"CREATE VIEW {ident(table.name)} AS SELECT {columns} FROM read_parquet({sql_path(source)})"
                )
            # The query runs with the machine's files out of reach (read_csv('/etc/passwd'), glob(), ...):
            # only the tables' files can be read and only this query's result folder written.
            con.execute(f"SET allowed_directories = [{', '.join(sql_path(f) for f in [*folders, files[0]])}]")
            con.execute(f"SET allowed_paths = [{', '.join(sql_path(f) for f in files[1:])}]")
            con.execute("SET enable_external_access = false")
            con.execute(f"COPY ({sql}) TO {sql_path(out)} ({options})")
        return out

    def _deliver_to_folder(self, path: Path, key_prefix: str) -> str:
        target = self.work_dir / "results" / key_prefix / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        return target.parent.as_uri() + "/"

    # ------------------------------------------------------------------ contract

    def _move(self, query: dict[str, Any], status: str) -> None:
        query["status"] = status
        self.history[query["id"]].append(status)

    def _query(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """The query a Get or Update request names, after checking the request."""
        self._validate(operation, request)
        self._membership(request["membershipIdentifier"], operation)
        query = self.queries.get(request["protectedQueryIdentifier"])
        if query is None:
            raise _error(
                "ResourceNotFoundException", f"no protected query {request['protectedQueryIdentifier']}", operation
            )
        return query

    def _membership(self, identifier: str, operation: str) -> None:
        if identifier not in (self.membership_id, self.membership_arn):
            raise _error("ResourceNotFoundException", f"membership {identifier} not found", operation)

    @staticmethod
    def _validate(operation: str, request: Mapping[str, Any]) -> None:
        shape = _MODEL.operation_model(operation).input_shape
        report = ParamValidator().validate(request, shape)
        enum_errors = list(_enum_errors(request, shape, operation))
        if report.has_errors() or enum_errors:
            raise ParamValidationError(report="\n".join(filter(None, [report.generate_report(), *enum_errors])))

    @staticmethod
    def _checked(operation: str, response: dict[str, Any]) -> dict[str, Any]:
        shape = _MODEL.operation_model(operation).output_shape
        report = ParamValidator().validate(response, shape)
        problems = list(_enum_errors(response, shape, operation))
        if report.has_errors() or problems:  # a bug in this stand-in, never the caller's fault
            raise AssertionError(
                f"{operation} response breaks the service model: {report.generate_report()} {problems}"
            )
        return response


def _enum_errors(value: Any, shape, path: str):
    """Values outside a string shape's enum (botocore's validator does not check enums)."""
    if shape.type_name == "structure" and isinstance(value, Mapping):
        for name, member in shape.members.items():
            if name in value:
                yield from _enum_errors(value[name], member, f"{path}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _enum_errors(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, Mapping):
        for key, item in value.items():
            yield from _enum_errors(item, shape.value, f"{path}.{key}")
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        yield f"Invalid value {value!r} for {path}, valid values: {', '.join(shape.enum)}"


def _error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def local_session(
    stack: contextlib.ExitStack, store: Store, config: ProjectConfig, partner: str, work: Path
) -> MatchSession:
    """The project's collaboration (`core.cleanroom.collaboration`) as a local engine over the stored tables:
    the advertiser's `first_party` and the partner's table, each with its rule, and the partner's templates."""
    contract = config.partners[partner]
    if contract.clean_room.member:
        raise ValueError(
            f"{partner} is a member of the collaboration (clean_room.member): its table lives in its own AWS account, "
            "so the local engine has nothing to match it against; run in aws mode (AUDIENCE_ASSETS_ENV=aws), or "
            "have the partner deliver files and drop member: true"
        )
    partner_rule = collaboration.partner_rule(contract.clean_room.analysis_rule, partner)
    first_party_rule = collaboration.first_party_rule(
        config.sources.first_party.clean_room.analysis_rule, list(config.partners), config.match_keys
    )
    tables = [
        ConfiguredTable(
            FIRST_PARTY_TABLE,
            stack.enter_context(store.local_copy(layout.CLEAN_ROOM_FIRST_PARTY)),
            first_party_columns(config.match_keys),
            first_party_rule,
            collaboration.RUNNER_ACCOUNT,
        ),
        ConfiguredTable(
            partner, partner_table(stack, store, partner), PARTNER_COLUMNS, partner_rule, collaboration.PARTNER_ACCOUNT
        ),
    ]
    texts = collaboration.analyses(partner, contract.match_keys, contract.clean_room.match_on, partner_rule.kind)
    templates = [
        AnalysisTemplate(collaboration.template_arn(name, partner), f"{name}-{partner}", sql)
        for name, sql in texts.items()
    ]

    def deliver(path: Path, key_prefix: str) -> str:
        store.upload(path, f"{key_prefix}/{path.name}")
        return store.uri(key_prefix) + "/"

    room = LocalCollaboration(
        membership_id=collaboration.MEMBERSHIP_ID,
        account_id=collaboration.RUNNER_ACCOUNT,
        tables=tables,
        templates=templates,
        work_dir=work / "engine",
        deliver=deliver,
    )
    if partner_rule.kind != "CUSTOM":  # templates belong to CUSTOM rules; LIST tables take the SQL itself
        return MatchSession(room, collaboration.MEMBERSHIP_ID, {"queryString": texts["audience_match"]}, None, store)
    return MatchSession(
        room,
        collaboration.MEMBERSHIP_ID,
        {"analysisTemplateArn": collaboration.template_arn("audience_match", partner)},
        {"analysisTemplateArn": collaboration.template_arn("overlap_count", partner)},
        store,
    )
