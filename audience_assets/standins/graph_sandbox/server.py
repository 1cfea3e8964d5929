"""The sandbox's Graph API: requests routed as Meta routes them (versions, tokens and `appsecret_proof`, object
lookup, the account's rate budget with `X-Business-Use-Case-Usage`, faults from the profile), answered from
`state` after `validation`, in process (`transport()`) or over real HTTP on 127.0.0.1 (`serve()`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from audience_assets.standins.graph_sandbox import lookalikes, uploads, validation
from audience_assets.standins.graph_sandbox.budget import RateBudget
from audience_assets.standins.graph_sandbox.config import SandboxConfig, SandboxResponse
from audience_assets.standins.graph_sandbox.objects import OPTIONAL_AUDIENCE_FIELDS, account_fields, audience_fields
from audience_assets.standins.graph_sandbox.state import SandboxState
from audience_assets.standins.graph_sandbox.validation import (
    GraphError,
    check_version,
    parse_params,
    prepare_rows,
    select_fields,
    unknown,
)

if TYPE_CHECKING:
    from audience_assets.standins.graph_sandbox.http import SandboxServer


class GraphSandbox:
    """The emulator. Thread-safe; several processes may share one state file."""

    def __init__(
        self,
        state_path: Path | str | None = None,
        config: SandboxConfig | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config or SandboxConfig()
        self.clock = clock
        self.state = SandboxState(state_path, clock)
        self._lock = threading.RLock()
        self._prepared = threading.local()  # this request's upload rows, keyed before the lock (`prepare_rows`)
        self._random = random.Random(self.config.faults.seed)
        self.budget = RateBudget(self.config, clock, self._random)

    # ------------------------------------------------------------------ request entry point
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> SandboxResponse:
        split = urlsplit(raw_path)
        headers = {k.lower(): v for k, v in headers.items()}
        if split.path.startswith("/_sandbox/"):
            return self._admin(method, split.path, dict(parse_qsl(split.query)), body)
        fault = self.config.faults.draw(self._random)
        if fault == "timeout_before":
            return SandboxResponse(504, b"", {}, drop=True)
        if fault == "reset":
            return SandboxResponse(502, b"", {}, drop=True, reset=True)
        if fault == "server_error":
            if self._random.random() < 0.3:
                return SandboxResponse(502, b"<html><body>502 Bad Gateway</body></html>", {"content-type": "text/html"})
            error = GraphError(
                500, 2, "An unexpected error has occurred. Please retry your request later.", is_transient=True
            )
            return self._json(500, error.body(), {})
        # What routing learned before a request failed: the ad account (an error answer carries the usage
        # header too, above all a throttle's `estimated_time_to_regain_access`) and replace sessions that timed
        # out (the timeout stands even when the request that noticed it is rejected and rolled back).
        context: dict[str, Any] = {"account": None, "expired": []}
        try:
            # Parsing the body and keying an upload's rows need no state: done before taking the lock, so one
            # request's rows are keyed while another's are written (sqlite releases the GIL).
            params = parse_params(split.query, headers, body)
            self._prepared.rows = prepare_rows(params)
            try:
                with self._lock, self.state.transaction():
                    verb = method.upper()
                    if verb == "POST" and str(params.get("method", "")).upper() in ("DELETE", "GET"):
                        verb = str(params.pop("method")).upper()
                    _, parts, context["version_warning"] = check_version(
                        split.path, *self.config.version_window(), upgrade_retired=self.config.upgrade_retired
                    )
                    token = self._authenticate(params, headers)
                    account, result = self._route(verb, parts, params, token, fault == "throttle", context)
                    headers = self.budget.usage_headers(account)  # under the lock: other requests charge the budget
            finally:
                self._prepared.rows = None
            if context.get("version_warning"):
                headers = {**headers, "X-Ad-Api-Version-Warning": context["version_warning"]}
            response = self._json(200, result, headers)
        except GraphError as error:
            with self._lock:
                if context["expired"]:
                    self.state.persist_expiry(context["expired"])
                if error.code == 80003:
                    self.state.bump("throttled")
                headers = (
                    self.budget.usage_headers(context["account"], error.usage_minutes, throttled=error.code == 80003)
                    if error.usage_header
                    else {}
                )
            response = self._json(error.status, error.body(), headers)
        if fault == "timeout_after":
            response.drop = True
        return response

    def transport(self) -> httpx.MockTransport:
        """An httpx transport that answers in-process (a dropped response raises ReadTimeout)."""

        def handler(request: httpx.Request) -> httpx.Response:
            response = self.handle(
                request.method, request.url.raw_path.decode(), dict(request.headers), request.content
            )
            if response.reset:
                raise httpx.RemoteProtocolError("sandbox: connection reset (injected)", request=request)
            if response.drop:
                raise httpx.ReadTimeout("sandbox: response dropped (injected timeout)", request=request)
            return httpx.Response(response.status, headers=response.headers, content=response.body)

        return httpx.MockTransport(handler)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
        """Serve over real HTTP on a loopback port in a background thread."""
        from audience_assets.standins.graph_sandbox.http import SandboxServer

        return SandboxServer(self, host, port)

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str]) -> SandboxResponse:
        return SandboxResponse(status, json.dumps(payload).encode(), {"content-type": "application/json", **headers})

    def _authenticate(self, params: dict[str, Any], headers: dict[str, str]) -> str:
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else str(params.pop("access_token", "") or "")
        params.pop("access_token", None)
        if not token:
            raise GraphError(400, 104, "An access token is required to request this resource.")
        if token in self.config.expired_tokens:
            raise GraphError(400, 190, "Error validating access token: Session has expired.", subcode=463)
        if token not in self.config.tokens:
            raise GraphError(400, 190, "Invalid OAuth access token - Cannot parse access token")
        secret = self.config.app_secret
        proof = str(params.pop("appsecret_proof", "") or "")
        if secret:
            if not proof:
                raise GraphError(
                    400,
                    100,
                    "API calls from the server require an appsecret_proof argument",
                    error_type="GraphMethodException",
                )
            expected = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(proof.encode(), expected.encode()):
                raise GraphError(
                    400, 100, "Invalid appsecret_proof provided in the API argument", error_type="GraphMethodException"
                )
        return token

    def _can_use(self, token: str, account: str) -> bool:
        allowed = self.config.tokens.get(token, [])
        return "*" in allowed or account in allowed

    def _route(
        self,
        verb: str,
        parts: list[str],
        params: dict[str, Any],
        token: str,
        forced_throttle: bool,
        context: dict[str, Any],
    ) -> tuple[str | None, Any]:
        if parts == ["me"] and verb == "GET":
            return None, {"id": "10" + hashlib.sha256(token.encode()).hexdigest()[:12], "name": "Sandbox system user"}
        if parts == ["me", "permissions"] and verb == "GET":
            granted = self.config.permissions.get(token, ["ads_management", "ads_read", "business_management"])
            return None, {"data": [{"permission": p, "status": "granted"} for p in granted]}
        if not parts:
            raise unknown(verb, "")
        head = parts[0]
        if head.startswith("act_"):
            account = self._account(verb, head, token)
            context["account"] = account
            self.budget.charge(account, forced_throttle)
            if len(parts) == 1 and verb == "GET":
                return account, select_fields(
                    account_fields(account, self.config.ad_accounts[account]), params, default=("id",)
                )
            if parts[1:] == ["customaudiences"] and verb == "GET":
                return account, self._list_audiences(account, params)
            if parts[1:] == ["customaudiences"] and verb == "POST":
                return account, self._create(account, params)
            raise unknown(verb, "/".join(parts))
        audience = self._audience(verb, head, token, context)
        account = context["account"] = audience["account"]
        self.budget.charge(account, forced_throttle)
        if len(parts) == 1 and verb == "GET":
            fields = self._fields(audience)
            self.state.read_once(audience["id"])
            return account, select_fields(fields, params, default=("id",), optional=OPTIONAL_AUDIENCE_FIELDS)
        if len(parts) == 1 and verb == "DELETE":
            self.state.delete_audience(head)
            return account, {"success": True}
        if len(parts) == 1 and verb == "POST":
            return account, self._update(audience, params)
        if parts[1:] == ["users"] and verb in ("POST", "DELETE"):
            return account, uploads.users(
                self.state, self.config, audience, params, self._prepared_rows(), remove=verb == "DELETE"
            )
        if parts[1:] == ["usersreplace"] and verb == "POST":
            return account, uploads.replace(self.state, self.config, audience, params, self._prepared_rows())
        if parts[1:] == ["sessions"] and verb == "GET":
            return account, uploads.sessions(self.state, self.config, audience, params)
        raise unknown(verb, "/".join(parts))

    def _account(self, verb: str, account: str, token: str) -> str:
        if account not in self.config.ad_accounts:
            raise unknown(verb, account)
        if not self._can_use(token, account):
            raise GraphError(
                403, 200, f"(#200) The current user can not access ad account {account}", error_type="OAuthException"
            )
        return account

    def _list_audiences(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        raw_limit = str(params.get("limit", "") or "25")
        if not raw_limit.isascii() or not raw_limit.isdigit() or int(raw_limit) < 1:
            raise GraphError(
                400, 100, "(#100) Param limit must be a positive integer", error_type="GraphMethodException"
            )
        limit = min(int(raw_limit), 500)
        after = str(params.get("after", "") or "")
        ids = self.state.audience_ids(account, after, limit + 1)
        page = ids[:limit]
        audiences = [a for a in map(self.state.audience, page) if a is not None]
        data = [select_fields(self._fields(a), params, ("id",), OPTIONAL_AUDIENCE_FIELDS) for a in audiences]
        result: dict[str, Any] = {"data": data}
        if page:
            result["paging"] = {"cursors": {"before": page[0], "after": page[-1]}}
            if len(ids) > limit:
                result["paging"]["next"] = f"/customaudiences?after={page[-1]}"
        return result

    def _create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("name", "") or "").strip()
        if not name:
            raise GraphError(400, 100, "(#100) The parameter name is required", error_type="OAuthException")
        subtype = str(params.get("subtype", "CUSTOM") or "CUSTOM")
        if subtype not in validation.SUBTYPES:
            raise GraphError(400, 100, f"(#100) Param subtype must be one of {{{', '.join(validation.SUBTYPES)}}}")
        source = params.get("customer_file_source")
        if subtype == "CUSTOM" and not source:
            raise GraphError(400, 100, "Missing parameter(s): customer_file_source", error_type="OAuthException")
        if source is not None and source not in validation.CUSTOMER_FILE_SOURCES:
            raise GraphError(
                400,
                100,
                f"(#100) Param customer_file_source must be one of {{{', '.join(validation.CUSTOMER_FILE_SOURCES)}}}",
            )
        if not self.config.ad_accounts[account].get("tos_accepted", True):
            raise GraphError(
                403,
                200,
                "(#200) Custom Audience Terms Not Accepted: You need to accept the Custom Audience Terms "
                "before you can create or edit an audience.",
                subcode=1870090,
            )
        retention = params.get("retention_days")
        if retention not in (None, ""):
            if not str(retention).isascii() or not str(retention).isdigit() or not 0 <= int(retention) <= 180:
                raise GraphError(400, 100, "(#100) Param retention_days must be an integer between 0 and 180")
        if self.state.count_audiences(account) >= validation.MAX_AUDIENCES_PER_ACCOUNT:
            raise GraphError(
                400, 2654, "(#2654) You have reached the maximum number of customer file custom audiences (500)."
            )
        if subtype == "LOOKALIKE":
            return lookalikes.create(self.state, self.config, account, name, params)
        value_based = str(params.get("is_value_based", "false")).lower() in ("true", "1")
        audience_id = self.state.create_audience(
            account,
            name,
            subtype,
            str(params.get("description", "") or ""),
            source,
            None if retention in (None, "") else int(retention),
            value_based,
        )
        return {"id": audience_id}

    def _fields(self, audience: dict[str, Any]) -> dict[str, Any]:
        """An audience's fields; a lookalike names its origin, deleted or not (a lookalike outlives its seed)."""
        origin = audience.get("origin_audience_id")
        name = self.state.audience_name(origin) if origin else None
        return audience_fields(audience, self.state.member_count(audience["id"]), name)

    def _update(self, audience: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """`POST /{audience_id}`: a new name or description for the same audience (its members stay)."""
        changes = {k: str(params[k]) for k in ("name", "description") if k in params}
        unknown_fields = sorted(set(params) - {"name", "description", "retention_days", "method"})
        if unknown_fields:
            raise GraphError(400, 100, f"(#100) Param {unknown_fields[0]} is not a valid field for this audience")
        if "name" in changes and not changes["name"].strip():
            raise GraphError(400, 100, "(#100) The parameter name must be a non-empty string")
        self.state.update_audience(audience["id"], **changes)
        return {"success": True}

    def _audience(self, verb: str, audience_id: str, token: str, context: dict[str, Any]) -> dict[str, Any]:
        audience = self.state.audience(audience_id)
        if audience is None:
            raise unknown(verb, audience_id)
        if not self._can_use(token, audience["account"]):
            raise GraphError(403, 200, f"(#200) The current user can not update audience {audience_id}")
        if self.state.expire_replace(audience_id):
            context["expired"].append(audience_id)
        return audience

    def _prepared_rows(self) -> tuple | None:
        """This request's upload rows, keyed before the lock (see `handle`)."""
        return getattr(self._prepared, "rows", None)

    # ------------------------------------------------------------------ test and demo hooks
    def counter(self, name: str) -> int:
        return self.state.counter(name)

    def member_keys(self, audience_id: str) -> set[str]:
        return self.state.member_keys(audience_id)

    def member_values(self, audience_id: str) -> dict[str, float]:
        """A value-based audience's LOOKALIKE_VALUE per member (row key)."""
        return self.state.member_values(audience_id)

    def lookalikes(self, origin_id: str) -> list[dict[str, Any]]:
        """The live lookalikes of an audience: id, country, starting_ratio and ratio of each, oldest first."""
        keep = ("id", "country", "starting_ratio", "ratio")
        return [{k: held[k] for k in keep} for held in self.state.lookalikes(origin_id)]

    def audience_id(self, name: str, account: str | None = None) -> str | None:
        return self.state.audience_id(name, account)

    def resent_replace_batches(self) -> int:
        """How many replace batches arrived more than once (a correct client keeps this at 0)."""
        return self.state.resent_replace_batches()

    def set_health(
        self,
        audience_id: str,
        *,
        delivery: tuple[int, str] | None = None,
        operation: tuple[int, str] | None = None,
        populating_reads: int = 0,
    ) -> None:
        """Make Meta report this audience's delivery_status / operation_status (what a real audience goes
        through: too small, populating for a while, low match rate...); for tests and demos."""
        with self._lock:
            if delivery:
                self.state.set_delivery(audience_id, *delivery)
            if operation:
                self.state.set_status(audience_id, *operation)
            self.state.set_populating(audience_id, populating_reads)

    def flag(self, audience_id: str, flagged: bool = True) -> None:
        """Mark an audience as flagged for integrity (operation_status 471)."""
        self.state.flag(audience_id, flagged)

    def _admin(self, method: str, path: str, query: dict[str, str], body: bytes) -> SandboxResponse:
        """`/_sandbox/...` endpoints for tests and the local demo (not part of Meta's API)."""
        with self._lock:
            if path == "/_sandbox/audiences":
                return self._json(200, {"data": self.state.listing()}, {})
            if path == "/_sandbox/members":
                return self._json(200, {"data": sorted(self.member_keys(query.get("audience_id", "")))}, {})
            if path == "/_sandbox/values":
                return self._json(
                    200, {"data": dict(sorted(self.member_values(query.get("audience_id", "")).items()))}, {}
                )
            if path == "/_sandbox/stats":
                return self._json(
                    200, {**self.state.counters(), "resent_replace_batches": self.resent_replace_batches()}, {}
                )
        return self._json(404, {"error": {"message": f"unknown sandbox endpoint {path}"}}, {})

    def close(self) -> None:
        self.state.close()
