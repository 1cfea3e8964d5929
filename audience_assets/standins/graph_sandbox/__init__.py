"""A local stand-in for Meta's Graph API, strict enough that passing against it means passing against Meta.

It implements the customer-list Custom Audience contract of `shared/reference/meta-api.md` §5: API
versions, token and `appsecret_proof` checks, object lookup, audience creation, payload and per-row
validation (invalid rows counted in `num_invalid_entries`), the upload-session state machine with every
replace rule and subcode, Graph error envelopes, the `X-Business-Use-Case-Usage` header with error
80003 when a per-account rate budget is exceeded, and fault injection (5xx, timeouts before or after
processing, throttles). State lives in SQLite (in memory, or a file shared by every process of a local
deployment). Use it in-process through `transport()` or as a real HTTP server on 127.0.0.1 (`serve()`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import socket
import sqlite3
import string
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

ALLOWED_SCHEMA_KEYS = (
    "EXTERN_ID,EMAIL,PHONE,GEN,DOBY,DOBM,DOBD,LN,FN,FI,CT,ST,ZIP,MADID,COUNTRY,PARTIALPHONE,PHONEID,STREETNAME,"
    "STREETNUM,STREETTYPE,STREET2ROW,STREETADDRESS,APPUID,PAGEUID,F5FIRST,F5LAST,EMAIL_MD5,PHONE_MD5"
).split(",")
SINGLE_KEY_SCHEMAS = ("EMAIL_SHA256", "PHONE_SHA256", "MOBILE_ADVERTISER_ID", "EXTERN_ID", "UID")
HASHED_CELL_KEYS = {"EMAIL", "PHONE", "GEN", "DOBY", "DOBM", "DOBD", "LN", "FN", "FI", "CT", "ST", "ZIP", "COUNTRY",
                    "F5FIRST", "F5LAST", "EMAIL_SHA256", "PHONE_SHA256"}
CUSTOMER_FILE_SOURCES = ("USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED")
SUBTYPES = ("CUSTOM", "WEBSITE", "APP", "OFFLINE_CONVERSION", "CLAIM", "PARTNER", "MANAGED", "VIDEO", "LOOKALIKE",
            "ENGAGEMENT", "DATA_SET", "BAG_OF_ACCOUNTS", "STUDY_RULE_AUDIENCE", "FOX", "MEASUREMENT", "REGULATED_CATEGORIES_AUDIENCE")
MAX_ROWS_PER_REQUEST = 10_000
MAX_AUDIENCES_PER_ACCOUNT = 500
REPLACE_WINDOW_SECONDS = 90 * 60
REPLACE_MAX_USERS = 100_000_000
MAX_INVALID_SAMPLES = 100
_MADID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX_BYTES = b"0123456789abcdef"
_VERSION = re.compile(r"^v(\d+)\.0$")
NORMAL = (200, "Normal")


def _valid_cells(key: str, column: Sequence[Any]) -> list[str]:
    """One column of a payload as `KEY=cell` where the cell is valid for its key, else "". Hashed keys need
    64 lowercase hex, device ids a UUID or a digest, other keys any non-blank text or number. A column of
    digests is checked as a whole (their lengths, then all their characters at once), not with a regular
    expression per cell: uploads run to millions of cells."""
    label = f"{key}="
    if key in HASHED_CELL_KEYS:
        given = [c for c in column if c is not None and c != ""]
        try:
            joined = "".join(given).encode()
        except (TypeError, UnicodeEncodeError):  # a cell that is not text, or not encodable text
            joined = None
        # every given cell is a digest: 64 characters long, and nothing but lowercase hex in all of them
        if joined is not None and set(map(len, given)) <= {64} and not joined.translate(None, _HEX_BYTES):
            return [label + c if c else "" for c in column]
        return [label + c if isinstance(c, str) and _HEX64.fullmatch(c) else "" for c in column]
    if key in ("MADID", "MOBILE_ADVERTISER_ID"):
        return [label + c if isinstance(c, str) and (_MADID.fullmatch(c) or _HEX64.fullmatch(c)) else ""
                for c in column]
    return [f"{label}{c}" if isinstance(c, (str, int)) and str(c).strip() != "" else "" for c in column]


def _prepare_rows(params: dict[str, Any]) -> tuple[list[Any], list[str], tuple] | None:
    """(data, schema, `_row_keys` of them) for an upload whose payload is already a well-formed multi-key
    payload, else None (the request is checked, and its rows keyed, in order under the lock)."""
    payload = params.get("payload")
    if not isinstance(payload, dict):
        return None
    schema, data = payload.get("schema"), payload.get("data")
    if not (isinstance(schema, list) and schema and all(isinstance(k, str) for k in schema) and isinstance(data, list)
            and len(data) <= MAX_ROWS_PER_REQUEST and all(isinstance(r, list) and len(r) == len(schema) for r in data)):
        return None
    return data, schema, _row_keys(schema, data)


def _row_keys(schema: Sequence[str], data: Sequence[Sequence[Any]]) -> tuple[list[str | None], list[Sequence[Any]]]:
    """Per row, its canonical identity (a SHA-256 of its sorted valid `KEY=cell` pairs; None when no cell is
    valid), and the rows without any valid cell. LOOKALIKE_VALUE is a value, never part of an identity."""
    # Two `KEY=cell` strings differ first within their `KEY=` labels (a key name holds no "=", so no label
    # is another's prefix): sorting the labels once orders every row's cells, which are then joined as they come.
    order = sorted((f"{k}=", k, i) for i, k in enumerate(schema) if k != "LOOKALIKE_VALUE")
    columns = list(zip(*data)) if data else [() for _ in schema]
    cells = [_valid_cells(key, columns[i]) for _, key, i in order]
    keys: list[str | None] = []
    rejected = []
    sha256 = hashlib.sha256
    for row, valid in zip(data, zip(*cells) if cells else [() for _ in data]):
        joined = "|".join(filter(None, valid))
        if joined:
            keys.append(sha256(joined.encode("utf-8", "surrogatepass")).hexdigest())
        else:
            keys.append(None)
            rejected.append(row)
    return keys, rejected


@dataclasses.dataclass
class Faults:
    """Injected failures, drawn per API request from a seeded generator (probabilities 0..1).

    `throttle_headers` says how an injected throttle's usage header reads, one drawn per throttle:
    "estimate" (usage 100 %, access back in a minute), "regain0" (usage 100 %, estimate 0: Meta's header
    promises nothing more) or "none" (no usage header at all)."""

    server_error: float = 0.0        # 500 with a transient Graph error (or an HTML page)
    timeout_before: float = 0.0      # the request is dropped before it is processed
    timeout_after: float = 0.0       # processed, then the response is lost: the nasty case
    throttle: float = 0.0            # an 80003 although the budget is not used up
    reset: float = 0.0               # the connection is reset before the request is processed
    slow: float = 0.0                # the answer comes `slow_seconds` late (drawn apart from the others)
    slow_seconds: float = 2.0
    throttle_headers: tuple[str, ...] = ("estimate",)
    open_sessions: bool = False      # sessions still report "uploading" after their last batch
    delay_seconds: float = 0.0       # how long the HTTP server stalls before dropping a connection
    seed: int = 0

    PROFILE_HELP = ("comma-separated: throttle:P, 5xx:P, timeout_before:P, timeout_after:P, reset:P, slow:P, "
                    "slow_seconds:S, regain0, noheader, estimate, open_sessions, seed:N (P a probability 0..1)")

    @classmethod
    def parse(cls, profile: str, *, name: str = "META_SANDBOX_FAULTS") -> Faults:
        """A fault profile such as "throttle:0.15,5xx:0.05,regain0,noheader,reset:0.02,slow:0.05"."""
        rates = {"throttle": "throttle", "5xx": "server_error", "server_error": "server_error", "reset": "reset",
                 "timeout_before": "timeout_before", "timeout_after": "timeout_after", "slow": "slow"}
        values: dict[str, Any] = {}
        headers: list[str] = []
        for token in (t.strip() for t in profile.split(",")):
            if not token:
                continue
            key, _, raw = token.partition(":")
            try:
                if key in rates and raw:
                    rate = float(raw)
                    if not 0 <= rate <= 1:
                        raise ValueError(f"{raw} is not a probability")
                    values[rates[key]] = rate
                elif key == "slow_seconds" and raw:
                    values["slow_seconds"] = float(raw)
                elif key == "seed" and raw:
                    values["seed"] = int(raw)
                elif key in ("regain0", "estimate") and not raw:
                    headers.append(key)
                elif key == "noheader" and not raw:
                    headers.append("none")
                elif key == "open_sessions" and not raw:
                    values["open_sessions"] = True
                else:
                    raise ValueError("unknown fault")
            except ValueError as error:
                raise ValueError(f"{name}: cannot read {token!r} ({error}); expected {cls.PROFILE_HELP}") from None
        faults = cls(**values, **({"throttle_headers": tuple(headers)} if headers else {}))
        if faults.server_error + faults.timeout_before + faults.timeout_after + faults.throttle + faults.reset > 1:
            raise ValueError(f"{name}: the probabilities of 5xx, timeouts, throttles and resets add up to more than 1")
        return faults


@dataclasses.dataclass
class SandboxConfig:
    tokens: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {"sandbox-token": ["*"]})
    ad_accounts: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=lambda: {"act_1000000001": {"name": "Sandbox ad account", "tos_accepted": True}})
    app_secret: str | None = None           # when set, every call must carry a valid appsecret_proof
    min_version: int = 24
    max_version: int = 26
    rate_limit_calls: int | None = None     # per ad account per rolling window; None = unlimited
    rate_limit_window_seconds: float = 3600.0
    faults: Faults = dataclasses.field(default_factory=Faults)
    expired_tokens: list[str] = dataclasses.field(default_factory=list)


class GraphError(Exception):
    def __init__(self, status: int, code: int, message: str, *, subcode: int | None = None,
                 error_type: str = "OAuthException", is_transient: bool | None = None, usage_minutes: int = 0,
                 usage_header: bool = True):
        super().__init__(message)
        self.status, self.code, self.subcode, self.message = status, code, subcode, message
        self.error_type, self.is_transient, self.usage_minutes = error_type, is_transient, usage_minutes
        self.usage_header = usage_header  # an injected throttle may come without one

    def body(self) -> dict:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type, "code": self.code,
                                 "fbtrace_id": "A" + "".join(random.choices(string.ascii_letters + string.digits, k=20))}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.is_transient is not None:
            error["is_transient"] = self.is_transient
        return {"error": error}


@dataclasses.dataclass
class SandboxResponse:
    status: int
    body: bytes
    headers: dict[str, str]
    drop: bool = False           # the adapter must not deliver a response (simulated timeout)
    reset: bool = False          # ... and resets the connection instead of letting it time out


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audiences (
  id TEXT PRIMARY KEY, account TEXT NOT NULL, name TEXT NOT NULL, subtype TEXT NOT NULL, description TEXT,
  customer_file_source TEXT, retention_days INTEGER, is_value_based INTEGER NOT NULL DEFAULT 0,
  status_code INTEGER NOT NULL DEFAULT 200, status_text TEXT NOT NULL DEFAULT 'Normal',
  flagged INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
  updated REAL NOT NULL, data_source TEXT);
CREATE TABLE IF NOT EXISTS members (audience TEXT NOT NULL, row_key TEXT NOT NULL, PRIMARY KEY (audience, row_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
  audience TEXT NOT NULL, session_id TEXT NOT NULL, kind TEXT NOT NULL, started REAL NOT NULL,
  finished INTEGER NOT NULL DEFAULT 0, num_received INTEGER NOT NULL DEFAULT 0, num_invalid INTEGER NOT NULL DEFAULT 0,
  num_matched INTEGER NOT NULL DEFAULT 0, batches INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (audience, session_id));
CREATE TABLE IF NOT EXISTS batches (audience TEXT NOT NULL, session_id TEXT NOT NULL, batch_seq INTEGER NOT NULL,
  times INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (audience, session_id, batch_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replace_rows (audience TEXT NOT NULL, session_id TEXT NOT NULL, row_key TEXT NOT NULL,
  PRIMARY KEY (audience, session_id, row_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class GraphSandbox:
    """The emulator. Thread-safe; several processes may share one state file."""

    def __init__(self, state_path: Path | str | None = None, config: SandboxConfig | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config or SandboxConfig()
        self.clock = clock
        self._lock = threading.RLock()
        self._prepared = threading.local()  # this request's upload rows, keyed before the lock (`_prepare_rows`)
        self._random = random.Random(self.config.faults.seed)
        self._calls: dict[str, deque[float]] = {}
        if state_path:
            Path(state_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(state_path) if state_path else ":memory:", check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL" if state_path else "PRAGMA journal_mode=MEMORY")
        # A stand-in's state need not survive a power cut, and members are keyed by random digests, so every
        # upload touches pages all over the table: no fsync per commit, and a cache that holds the table.
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-262144")
        self._db.executescript(_SCHEMA)

    # ------------------------------------------------------------------ adapters
    def transport(self) -> httpx.MockTransport:
        """An httpx transport that answers in-process (a dropped response raises ReadTimeout)."""
        def handler(request: httpx.Request) -> httpx.Response:
            response = self.handle(request.method, request.url.raw_path.decode(), dict(request.headers), request.content)
            if response.reset:
                raise httpx.RemoteProtocolError("sandbox: connection reset (injected)", request=request)
            if response.drop:
                raise httpx.ReadTimeout("sandbox: response dropped (injected timeout)", request=request)
            return httpx.Response(response.status, headers=response.headers, content=response.body)
        return httpx.MockTransport(handler)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
        """Serve over real HTTP on a loopback port in a background thread."""
        return SandboxServer(self, host, port)

    # ------------------------------------------------------------------ request entry point
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> SandboxResponse:
        split = urlsplit(raw_path)
        headers = {k.lower(): v for k, v in headers.items()}
        if split.path.startswith("/_sandbox/"):
            return self._admin(method, split.path, dict(parse_qsl(split.query)), body)
        fault = self._draw_fault()
        if fault == "timeout_before":
            return SandboxResponse(504, b"", {}, drop=True)
        if fault == "reset":
            return SandboxResponse(502, b"", {}, drop=True, reset=True)
        if fault == "server_error":
            if self._random.random() < 0.3:
                return SandboxResponse(502, b"<html><body>502 Bad Gateway</body></html>", {"content-type": "text/html"})
            error = GraphError(500, 2, "An unexpected error has occurred. Please retry your request later.",
                               is_transient=True)
            return self._json(500, error.body(), {})
        # What routing learned before a request failed: the ad account (an error answer carries the usage
        # header too, above all a throttle's `estimated_time_to_regain_access`) and replace sessions that timed
        # out (the timeout stands even when the request that noticed it is rejected and rolled back).
        context: dict[str, Any] = {"account": None, "expired": []}
        try:
            # Parsing the body and keying an upload's rows need no state: done before taking the lock, so one
            # request's rows are keyed while another's are written (sqlite releases the GIL).
            params = self._params(split.query, headers, body)
            self._prepared.rows = _prepare_rows(params)
            try:
                with self._lock:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        verb = method.upper()
                        if verb == "POST" and str(params.get("method", "")).upper() in ("DELETE", "GET"):
                            verb = str(params.pop("method")).upper()
                        version, parts = self._version(split.path)
                        token = self._authenticate(params, headers)
                        account, result = self._route(verb, parts, params, token, fault == "throttle", context)
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
            finally:
                self._prepared.rows = None
            response = self._json(200, result, self._usage_headers(account))
        except GraphError as error:
            with self._lock:
                if context["expired"]:
                    self._persist_expiry(context["expired"])
                if error.code == 80003:
                    self._bump("throttled")
            headers = (self._usage_headers(context["account"], error.usage_minutes, throttled=error.code == 80003)
                       if error.usage_header else {})
            response = self._json(error.status, error.body(), headers)
        if fault == "timeout_after":
            response.drop = True
        return response

    def _draw_fault(self) -> str | None:
        f = self.config.faults
        if f.slow and self._random.random() < f.slow:
            time.sleep(f.slow_seconds)
        roll = self._random.random()
        for name, p in (("server_error", f.server_error), ("timeout_before", f.timeout_before),
                        ("timeout_after", f.timeout_after), ("throttle", f.throttle), ("reset", f.reset)):
            if roll < p:
                return name
            roll -= p
        return None

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str]) -> SandboxResponse:
        return SandboxResponse(status, json.dumps(payload).encode(), {"content-type": "application/json", **headers})

    @staticmethod
    def _params(query: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        ctype = headers.get("content-type", "")
        if body:
            if "application/json" in ctype:
                try:
                    decoded = json.loads(body)
                except ValueError:
                    raise GraphError(400, 100, "(#100) Invalid JSON in the request body", error_type="GraphMethodException") from None
                if not isinstance(decoded, dict):
                    raise GraphError(400, 100, "(#100) The request body must be a JSON object", error_type="GraphMethodException")
                params.update(decoded)
            else:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return params

    def _version(self, path: str) -> tuple[int, list[str]]:
        parts = [p for p in path.split("/") if p]
        match = _VERSION.match(parts[0]) if parts else None
        if not match:
            raise GraphError(400, 2635, "(#2635) You are calling a deprecated version of the Ads API. Please update to the latest version.")
        version = int(match.group(1))
        if version < self.config.min_version:
            raise GraphError(400, 2635, f"(#2635) You are calling a deprecated version of the Ads API: v{version}.0. "
                                        f"Please update to the latest version: v{self.config.max_version}.0.")
        if version > self.config.max_version:
            raise GraphError(400, 2635, f"(#2635) Unknown API version v{version}.0.")
        return version, parts[1:]

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
                raise GraphError(400, 100, "API calls from the server require an appsecret_proof argument",
                                 error_type="GraphMethodException")
            expected = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(proof.encode(), expected.encode()):
                raise GraphError(400, 100, "Invalid appsecret_proof provided in the API argument",
                                 error_type="GraphMethodException")
        return token

    def _can_use(self, token: str, account: str) -> bool:
        allowed = self.config.tokens.get(token, [])
        return "*" in allowed or account in allowed

    # ------------------------------------------------------------------ rate budget
    def _limit(self, account: str) -> int | None:
        """Calls per window for `account`: its own `rate_limit_calls`, else the sandbox-wide one."""
        return self.config.ad_accounts.get(account, {}).get("rate_limit_calls", self.config.rate_limit_calls)

    def _charge(self, account: str, forced: bool) -> None:
        limit = self._limit(account)
        now = self.clock()
        calls = self._calls.setdefault(account, deque())
        window = self.config.rate_limit_window_seconds
        while calls and calls[0] <= now - window:
            calls.popleft()
        message = ("(#80003) There have been too many calls to this ad-account. Wait a bit and try again. For more info, "
                   "please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.")
        if limit is not None and len(calls) >= limit:
            wait = calls[0] + window - now
            raise GraphError(400, 80003, message, usage_minutes=max(0, math.ceil(wait / 60)))
        if forced:  # an injected throttle: its header reads as the profile says (see Faults)
            kind = self._random.choice(self.config.faults.throttle_headers)
            raise GraphError(400, 80003, message, usage_minutes=1 if kind == "estimate" else 0,
                             usage_header=kind != "none")
        calls.append(now)

    def _usage_headers(self, account: str | None, regain_minutes: int = 0, *, throttled: bool = False) -> dict[str, str]:
        if account is None:
            return {}
        limit = self._limit(account)
        now = self.clock()
        calls = self._calls.get(account, deque())
        recent = sum(1 for t in calls if t > now - self.config.rate_limit_window_seconds)
        pct = 100 if throttled else min(100, int(100 * recent / limit)) if limit else 0
        usage = {account.removeprefix("act_"): [{
            "type": "custom_audience", "call_count": pct, "total_cputime": pct // 2, "total_time": pct // 2,
            "estimated_time_to_regain_access": regain_minutes, "ads_api_access_tier": "standard_access"}]}
        return {"x-business-use-case-usage": json.dumps(usage), "x-app-usage": json.dumps(
            {"call_count": pct // 4, "total_cputime": pct // 8, "total_time": pct // 8})}

    # ------------------------------------------------------------------ routing
    def _route(self, verb: str, parts: list[str], params: dict[str, Any], token: str, forced_throttle: bool,
               context: dict[str, Any]) -> tuple[str | None, Any]:
        if parts == ["me"] and verb == "GET":
            return None, {"id": "10" + hashlib.sha256(token.encode()).hexdigest()[:12], "name": "Sandbox system user"}
        if not parts:
            raise self._unknown(verb, "")
        head = parts[0]
        if head.startswith("act_"):
            account = self._account(verb, head, token)
            context["account"] = account
            self._charge(account, forced_throttle)
            if len(parts) == 1 and verb == "GET":
                return account, self._fields(self._account_fields(account), params, default=("id",))
            if parts[1:] == ["customaudiences"] and verb == "GET":
                return account, self._list_audiences(account, params)
            if parts[1:] == ["customaudiences"] and verb == "POST":
                return account, self._create(account, params)
            raise self._unknown(verb, "/".join(parts))
        audience = self._audience(verb, head, token, context)
        account = context["account"] = audience["account"]
        self._charge(account, forced_throttle)
        if len(parts) == 1 and verb == "GET":
            return account, self._fields(self._audience_fields(audience), params, default=("id",))
        if len(parts) == 1 and verb == "DELETE":
            self._db.execute("UPDATE audiences SET deleted = 1 WHERE id = ?", (head,))
            return account, {"success": True}
        if parts[1:] == ["users"] and verb in ("POST", "DELETE"):
            return account, self._users(audience, params, remove=verb == "DELETE")
        if parts[1:] == ["usersreplace"] and verb == "POST":
            return account, self._replace(audience, params)
        if parts[1:] == ["sessions"] and verb == "GET":
            return account, self._sessions(audience, params)
        raise self._unknown(verb, "/".join(parts))

    @staticmethod
    def _unknown(verb: str, object_id: str) -> GraphError:
        return GraphError(400, 100, f"Unsupported {verb.lower()} request. Object with ID '{object_id.split('/')[0]}' does not exist, "
                                    "cannot be loaded due to missing permissions, or does not support this operation. "
                                    "Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
                          subcode=33, error_type="GraphMethodException")

    def _account(self, verb: str, account: str, token: str) -> str:
        if account not in self.config.ad_accounts:
            raise self._unknown(verb, account)
        if not self._can_use(token, account):
            raise GraphError(403, 200, f"(#200) The current user can not access ad account {account}",
                             error_type="OAuthException")
        return account

    def _load_audience(self, audience_id: str) -> dict[str, Any] | None:
        cur = self._db.execute("SELECT * FROM audiences WHERE id = ? AND deleted = 0", (audience_id,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def _audience(self, verb: str, audience_id: str, token: str, context: dict[str, Any]) -> dict[str, Any]:
        audience = self._load_audience(audience_id)
        if audience is None:
            raise self._unknown(verb, audience_id)
        if not self._can_use(token, audience["account"]):
            raise GraphError(403, 200, f"(#200) The current user can not update audience {audience_id}")
        if self._expire_replace(audience):
            context["expired"].append(audience_id)
        return audience

    @staticmethod
    def _fields(obj: dict[str, Any], params: dict[str, Any], default: tuple[str, ...]) -> dict[str, Any]:
        requested = [f.strip() for f in str(params.get("fields", "")).split(",") if f.strip()] or list(default)
        unknown = [f for f in requested if f not in obj]
        if unknown:
            raise GraphError(400, 100, f"(#100) Tried accessing nonexisting field ({unknown[0]})",
                             error_type="GraphMethodException")
        return {"id": obj["id"], **{f: obj[f] for f in requested}}

    def _account_fields(self, account: str) -> dict[str, Any]:
        info = self.config.ad_accounts[account]
        return {"id": account, "account_id": account.removeprefix("act_"), "name": info.get("name", account),
                "account_status": 1, "tos_accepted": {"custom_audience_tos": 1} if info.get("tos_accepted", True) else {}}

    def _audience_fields(self, audience: dict[str, Any]) -> dict[str, Any]:
        size = self._db.execute("SELECT count(*) FROM members WHERE audience = ?", (audience["id"],)).fetchone()[0]
        lower, upper = (-1, -1) if size < 1000 else (int(size * 0.9), int(size * 1.1))
        return {
            "id": audience["id"], "name": audience["name"], "subtype": audience["subtype"],
            "description": audience["description"] or "", "customer_file_source": audience["customer_file_source"],
            "retention_days": audience["retention_days"], "is_value_based": bool(audience["is_value_based"]),
            "account_id": audience["account"].removeprefix("act_"),
            "approximate_count_lower_bound": lower, "approximate_count_upper_bound": upper,
            "operation_status": {"code": audience["status_code"], "description": audience["status_text"]},
            "delivery_status": {"code": 200, "description": "This audience is ready for use."},
            "time_updated": int(audience["updated"]), "time_content_updated": int(audience["updated"]),
            "sandbox_member_count": size,  # not a Meta field: the exact size, for tests and local demos
        }

    def _list_audiences(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        raw_limit = str(params.get("limit", "") or "25")
        if not raw_limit.isascii() or not raw_limit.isdigit() or int(raw_limit) < 1:
            raise GraphError(400, 100, "(#100) Param limit must be a positive integer", error_type="GraphMethodException")
        limit = min(int(raw_limit), 500)
        after = str(params.get("after", "") or "")
        rows = self._db.execute("SELECT id FROM audiences WHERE account = ? AND deleted = 0 AND id > ? ORDER BY id LIMIT ?",
                                (account, after, limit + 1)).fetchall()
        page = rows[:limit]
        data = [self._fields(self._audience_fields(self._load_audience(r[0]) or {}), params, default=("id",)) for r in page]
        result: dict[str, Any] = {"data": data}
        if page:
            result["paging"] = {"cursors": {"before": page[0][0], "after": page[-1][0]}}
            if len(rows) > limit:
                result["paging"]["next"] = f"/customaudiences?after={page[-1][0]}"
        return result

    def _create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("name", "") or "").strip()
        if not name:
            raise GraphError(400, 100, "(#100) The parameter name is required", error_type="OAuthException")
        subtype = str(params.get("subtype", "CUSTOM") or "CUSTOM")
        if subtype not in SUBTYPES:
            raise GraphError(400, 100, f"(#100) Param subtype must be one of {{{', '.join(SUBTYPES)}}}")
        source = params.get("customer_file_source")
        if subtype == "CUSTOM" and not source:
            raise GraphError(400, 100, "Missing parameter(s): customer_file_source", error_type="OAuthException")
        if source is not None and source not in CUSTOMER_FILE_SOURCES:
            raise GraphError(400, 100, f"(#100) Param customer_file_source must be one of {{{', '.join(CUSTOMER_FILE_SOURCES)}}}")
        if not self.config.ad_accounts[account].get("tos_accepted", True):
            raise GraphError(403, 200, "(#200) Custom Audience Terms Not Accepted: You need to accept the Custom Audience Terms "
                                       "before you can create or edit an audience.", subcode=1870090)
        retention = params.get("retention_days")
        if retention not in (None, ""):
            if not str(retention).isascii() or not str(retention).isdigit() or not 0 <= int(retention) <= 180:
                raise GraphError(400, 100, "(#100) Param retention_days must be an integer between 0 and 180")
        count = self._db.execute("SELECT count(*) FROM audiences WHERE account = ? AND deleted = 0", (account,)).fetchone()[0]
        if count >= MAX_AUDIENCES_PER_ACCOUNT:
            raise GraphError(400, 2654, "(#2654) You have reached the maximum number of customer file custom audiences (500).")
        audience_id = str(23850000000000000 + self._bump("audience_ids"))
        now = self.clock()
        value_based = str(params.get("is_value_based", "false")).lower() in ("true", "1")
        self._db.execute("INSERT INTO audiences (id, account, name, subtype, description, customer_file_source, retention_days, "
                         "is_value_based, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (audience_id, account, name, subtype, str(params.get("description", "") or ""), source,
                          None if retention in (None, "") else int(retention), int(value_based), now, now))
        return {"id": audience_id}

    # ------------------------------------------------------------------ uploads
    def _payload(self, audience: dict[str, Any], params: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
        raw = params.get("payload")
        if raw in (None, ""):
            raise GraphError(400, 100, "(#100) Missing required parameter: payload", error_type="OAuthException")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise GraphError(400, 100, "(#100) Param payload must be a JSON object") from None
        if not isinstance(raw, dict):
            raise GraphError(400, 100, "(#100) Param payload must be a JSON object")
        schema, data = raw.get("schema"), raw.get("data")
        if isinstance(schema, str):
            if schema not in SINGLE_KEY_SCHEMAS:
                raise GraphError(400, 100, f"(#100) Raw PII type is invalid, it should be one of {','.join(SINGLE_KEY_SCHEMAS)}")
            schema_list = [schema]
            data = [[d] if not isinstance(d, list) else d for d in (data or [])] if isinstance(data, list) else data
        elif isinstance(schema, list) and schema:
            schema_list = [str(s) for s in schema]
            unknown = [s for s in schema_list if s not in ALLOWED_SCHEMA_KEYS + ["LOOKALIKE_VALUE"]]
            if unknown:
                raise GraphError(400, 100, f"(#100) Raw PII type is invalid, it should be one of {','.join(ALLOWED_SCHEMA_KEYS)}")
            if len(set(schema_list)) != len(schema_list):
                raise GraphError(400, 100, "(#100) Duplicate keys in schema")
        else:
            raise GraphError(400, 100, "(#100) Param payload[schema] must be a non-empty list of keys or a key")
        if not isinstance(data, list):
            raise GraphError(400, 100, "(#100) Param payload[data] must be an array")
        if len(data) > MAX_ROWS_PER_REQUEST:
            raise GraphError(400, 100, f"(#100) Too many users in one request: {len(data)} (the maximum is {MAX_ROWS_PER_REQUEST})")
        for row in data:
            if not isinstance(row, list) or len(row) != len(schema_list):
                raise GraphError(400, 100, "(#100) Data is missing or does not match schema: every row needs "
                                           f"{len(schema_list)} values")
        if ("UID" in schema_list or "APPUID" in schema_list) and not raw.get("app_ids"):
            raise GraphError(400, 100, "(#100) app_ids is required for UID and APPUID")
        if "PAGEUID" in schema_list and not raw.get("page_ids"):
            raise GraphError(400, 100, "(#100) page_ids is required for PAGEUID")
        if audience["is_value_based"] and "LOOKALIKE_VALUE" not in schema_list:
            raise GraphError(400, 100, "(#100) Value-Based Custom Audience requires LOOKALIKE_VALUE attribute.")
        if not audience["is_value_based"] and "LOOKALIKE_VALUE" in schema_list:
            raise GraphError(400, 100, "(#100) LOOKALIKE_VALUE is only allowed for value-based custom audiences.")
        source = "single" if isinstance(schema, str) else "multi"
        if audience["data_source"] and audience["data_source"] != source:
            raise GraphError(400, 2650, "(#2650) Failed to update the custom audience: This audience was created from "
                                        f"data source FILE_IMPORTED.{'MULTI_HASHES' if source == 'single' else 'HASHES_OR_USER_IDS'}, "
                                        "which does not support this data type.")
        if not audience["data_source"]:
            self._db.execute("UPDATE audiences SET data_source = ? WHERE id = ?", (source, audience["id"]))
        return schema_list, data

    def _split_rows(self, schema: list[str], data: list[list[Any]]) -> tuple[list[str], int, dict[str, str]]:
        """The row keys of the valid rows, the number of invalid rows, and up to 100 samples of those
        (`{"<the entry as sent>": "<why>"}`, `{}` when every row is valid)."""
        prepared = getattr(self._prepared, "rows", None)
        if prepared is not None and prepared[0] is data and prepared[1] == schema:
            row_keys, rejected = prepared[2]
        else:
            row_keys, rejected = _row_keys(schema, data)
        samples: dict[str, str] = {}
        for row in rejected:
            if len(samples) >= MAX_INVALID_SAMPLES:
                break
            sent = [cell for cell in row if cell not in (None, "")]
            why = (f"invalid value for {', '.join(k for k, c in zip(schema, row) if c not in (None, ''))}" if sent
                   else "every field is empty")
            samples[",".join(str(cell) for cell in row)] = why
        return [k for k in row_keys if k is not None], len(rejected), samples

    def _session(self, params: dict[str, Any], required: bool) -> dict[str, Any] | None:
        raw = params.get("session")
        if raw in (None, ""):
            if required:
                raise GraphError(400, 100, "(#100) Missing required parameter: session")
            return None
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise GraphError(400, 100, "(#100) Param session must be a JSON object") from None
        if not isinstance(raw, dict):
            raise GraphError(400, 100, "(#100) Param session must be a JSON object")
        session_id, seq, last = raw.get("session_id"), raw.get("batch_seq"), raw.get("last_batch_flag")
        if not isinstance(session_id, int) or isinstance(session_id, bool) or not 0 < session_id < 2**63:
            raise GraphError(400, 100, "(#100) Param session[session_id] must be a positive 64-bit integer")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1):
            raise GraphError(400, 100, "(#100) Param session[batch_seq] must be a positive integer")
        if last is not None and not isinstance(last, bool):
            raise GraphError(400, 100, "(#100) Param session[last_batch_flag] must be a boolean")
        total = raw.get("estimated_num_total")
        if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
            raise GraphError(400, 100, "(#100) Param session[estimated_num_total] must be a non-negative integer")
        return {"session_id": str(session_id), "batch_seq": seq, "last": bool(last)}

    def _check_flagged(self, audience: dict[str, Any]) -> None:
        if audience["flagged"]:
            raise GraphError(400, 100, "Invalid parameter", subcode=1713230, error_type="OAuthException")
        if not self.config.ad_accounts[audience["account"]].get("tos_accepted", True):
            raise GraphError(403, 200, "(#200) Custom Audience Terms Not Accepted", subcode=1870090)
        if audience["subtype"] != "CUSTOM":
            raise GraphError(400, 2650, "(#2650) Failed to update the custom audience: only customer file (CUSTOM) "
                                        "audiences accept users")

    def _users(self, audience: dict[str, Any], params: dict[str, Any], remove: bool) -> dict[str, Any]:
        self._check_flagged(audience)
        if self._active_replace(audience["id"]):
            raise GraphError(400, 2650, "(#2650) Failed to update the custom audience: an audience update (replace) is in "
                                        "progress; try again later.", subcode=1870145)
        schema, data = self._payload(audience, params)
        session = self._session(params, required=False) or {"session_id": str(secrets.randbelow(2**62) + 1),
                                                            "batch_seq": None, "last": True}
        state = self._session_row(audience["id"], session["session_id"])
        if state is not None and state["kind"] != ("remove" if remove else "add"):
            raise GraphError(400, 100, f"(#100) Session {session['session_id']} belongs to another operation")
        if state is not None and state["finished"]:
            raise GraphError(400, 100, f"(#100) The upload session {session['session_id']} has already finished "
                                       "(last_batch_flag was sent)")
        row_keys, invalid, samples = self._split_rows(schema, data)
        # One statement over a JSON array of the keys, in key order (each B-tree page visited once): one call
        # into SQLite rather than one per row, each of which would hand the GIL to other requests' threads.
        keys = json.dumps(sorted(row_keys))
        if remove:
            self._db.execute("DELETE FROM members WHERE audience = ? AND row_key IN (SELECT value FROM json_each(?))",
                             (audience["id"], keys))
        else:
            self._db.execute("INSERT OR IGNORE INTO members (audience, row_key) SELECT ?, value FROM json_each(?)",
                             (audience["id"], keys))
        return self._record_batch(audience, session, "remove" if remove else "add", len(data), invalid, samples)

    def _session_row(self, audience_id: str, session_id: str) -> dict[str, Any] | None:
        cur = self._db.execute("SELECT * FROM sessions WHERE audience = ? AND session_id = ?", (audience_id, session_id))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def _record_batch(self, audience: dict[str, Any], session: dict[str, Any], kind: str, received: int, invalid: int,
                      samples: dict[str, str]) -> dict[str, Any]:
        now = self.clock()
        sid = session["session_id"]
        self._db.execute("INSERT OR IGNORE INTO sessions (audience, session_id, kind, started) VALUES (?, ?, ?, ?)",
                         (audience["id"], sid, kind, now))
        self._db.execute("UPDATE sessions SET num_received = num_received + ?, num_invalid = num_invalid + ?, "
                         "num_matched = num_matched + ?, batches = batches + 1, last_seq = max(last_seq, ?), "
                         "finished = max(finished, ?) WHERE audience = ? AND session_id = ?",
                         (received, invalid, received - invalid, session["batch_seq"] or 0, int(session["last"]),
                          audience["id"], sid))
        if session["batch_seq"]:
            self._db.execute("INSERT INTO batches (audience, session_id, batch_seq) VALUES (?, ?, ?) "
                             "ON CONFLICT DO UPDATE SET times = times + 1", (audience["id"], sid, session["batch_seq"]))
        self._db.execute("UPDATE audiences SET updated = ? WHERE id = ?", (now, audience["id"]))
        state = self._session_row(audience["id"], sid)
        assert state is not None
        return {"audience_id": audience["id"], "session_id": sid, "num_received": state["num_received"],
                "num_invalid_entries": state["num_invalid"], "invalid_entry_samples": samples}

    def _active_replace(self, audience_id: str) -> dict[str, Any] | None:
        cur = self._db.execute("SELECT * FROM sessions WHERE audience = ? AND kind = 'replace' AND finished = 0", (audience_id,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def _expire_replace(self, audience: dict[str, Any]) -> bool:
        """A replace session older than 90 minutes ends with what it received so far."""
        active = self._active_replace(audience["id"])
        if active and self.clock() - active["started"] > REPLACE_WINDOW_SECONDS:
            self._finish_replace(audience["id"], active["session_id"], timed_out=True)
            return True
        return False

    def _persist_expiry(self, audience_ids: list[str]) -> None:
        """Apply replace timeouts found by a request that then failed (its transaction was rolled back)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for audience_id in audience_ids:
                audience = self._load_audience(audience_id)
                if audience is not None:
                    self._expire_replace(audience)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _finish_replace(self, audience_id: str, session_id: str, timed_out: bool = False) -> None:
        self._db.execute("DELETE FROM members WHERE audience = ?", (audience_id,))
        self._db.execute("INSERT INTO members (audience, row_key) SELECT audience, row_key FROM replace_rows "
                         "WHERE audience = ? AND session_id = ?", (audience_id, session_id))
        self._db.execute("DELETE FROM replace_rows WHERE audience = ? AND session_id = ?", (audience_id, session_id))
        self._db.execute("UPDATE sessions SET finished = ? WHERE audience = ? AND session_id = ?",
                         (2 if timed_out else 1, audience_id, session_id))
        self._db.execute("UPDATE audiences SET status_code = 200, status_text = 'Normal' WHERE id = ?", (audience_id,))

    def _replace(self, audience: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        self._check_flagged(audience)
        session = self._session(params, required=True)
        assert session is not None
        if session["batch_seq"] is None:
            raise GraphError(400, 100, "(#100) Param session[batch_seq] is required for usersreplace")
        sid, seq = session["session_id"], session["batch_seq"]
        state = self._session_row(audience["id"], sid)
        active = self._active_replace(audience["id"])
        if state is not None and state["kind"] != "replace":
            raise GraphError(400, 100, f"(#100) Session {sid} belongs to another operation")
        if state is not None and state["finished"]:
            subcode = 1870158 if state["finished"] == 2 else 1870159
            what = "timed out (90 minutes)" if state["finished"] == 2 else "already finished"
            raise GraphError(400, 2650, f"(#2650) Failed to update the custom audience: the replace session {sid} {what}.",
                             subcode=subcode)
        if seq == 1:
            if active and active["session_id"] != sid:
                raise GraphError(400, 2650, "(#2650) Failed to update the custom audience: another replace is in progress.",
                                 subcode=1870145)
            size = self._db.execute("SELECT count(*) FROM members WHERE audience = ?", (audience["id"],)).fetchone()[0]
            if size >= REPLACE_MAX_USERS:
                raise GraphError(400, 2650, "(#2650) Audiences of 100 million or more cannot be replaced", subcode=1870144)
            if state is not None:  # batch 1 again: Meta starts the replace over, dropping what the session sent
                self._bump("replace_restarts")
                self._db.execute("DELETE FROM replace_rows WHERE audience = ? AND session_id = ?", (audience["id"], sid))
                self._db.execute("UPDATE sessions SET started = ?, num_received = 0, num_invalid = 0 WHERE audience = ? "
                                 "AND session_id = ?", (self.clock(), audience["id"], sid))
            self._db.execute("UPDATE audiences SET status_code = 300, status_text = 'replace_in_progress' WHERE id = ?",
                             (audience["id"],))
        elif state is None:
            raise GraphError(400, 2650, "(#2650) Invalid upload batch for replace: the first batch (batch_seq 1) of "
                                        f"session {sid} has not been received.", subcode=1870147)
        schema, data = self._payload(audience, params)
        row_keys, invalid, samples = self._split_rows(schema, data)
        self._db.execute("INSERT OR IGNORE INTO replace_rows (audience, session_id, row_key) SELECT ?, ?, value "
                         "FROM json_each(?)", (audience["id"], sid, json.dumps(sorted(row_keys))))
        result = self._record_batch(audience, {**session, "last": False}, "replace", len(data), invalid, samples)
        if session["last"]:
            self._finish_replace(audience["id"], sid)
        return result

    def _sessions(self, audience: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        wanted = str(params.get("session_id", "") or "")
        cur = self._db.execute("SELECT * FROM sessions WHERE audience = ? AND (? = '' OR session_id = ?) ORDER BY started DESC",
                               (audience["id"], wanted, wanted))
        cols = [d[0] for d in cur.description]
        data = []
        for row in cur.fetchall():
            s = dict(zip(cols, row))
            if self.config.faults.open_sessions:  # as users report of Meta: done, yet still "uploading"
                s["finished"] = 0
            stage = "finished" if s["finished"] else "uploading"
            data.append({"session_id": s["session_id"], "start_time": str(int(s["started"])),
                         "end_time": str(int(s["started"])) if s["finished"] else "0",
                         "num_received": str(s["num_received"]), "num_invalid_entries": str(s["num_invalid"]),
                         "num_matched": str(s["num_matched"]), "progress": "100" if s["finished"] else "50",
                         "stage": stage, "batch_seqs_received": s["batches"], "last_batch_seq": s["last_seq"]})
        return {"data": data}

    # ------------------------------------------------------------------ test and demo hooks
    def _bump(self, name: str) -> int:
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT DO UPDATE SET value = value + 1", (name,))
        return self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    def counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def member_keys(self, audience_id: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT row_key FROM members WHERE audience = ?", (audience_id,))}

    def audience_id(self, name: str, account: str | None = None) -> str | None:
        row = self._db.execute("SELECT id FROM audiences WHERE name = ? AND deleted = 0 AND (? IS NULL OR account = ?)",
                               (name, account, account)).fetchone()
        return row[0] if row else None

    def resent_replace_batches(self) -> int:
        """How many replace batches arrived more than once (a correct client keeps this at 0)."""
        row = self._db.execute("SELECT coalesce(sum(b.times - 1), 0) FROM batches b JOIN sessions s USING (audience, session_id) "
                               "WHERE s.kind = 'replace'").fetchone()
        return int(row[0]) + self.counter("replace_restarts")

    def flag(self, audience_id: str, flagged: bool = True) -> None:
        """Mark an audience as flagged for integrity (operation_status 471)."""
        code, text = (471, "Flagged") if flagged else NORMAL
        self._db.execute("UPDATE audiences SET flagged = ?, status_code = ?, status_text = ? WHERE id = ?",
                         (int(flagged), code, text, audience_id))

    def _admin(self, method: str, path: str, query: dict[str, str], body: bytes) -> SandboxResponse:
        """`/_sandbox/...` endpoints for tests and the local demo (not part of Meta's API)."""
        with self._lock:
            if path == "/_sandbox/audiences":
                rows = self._db.execute("SELECT a.id, a.name, a.account, (SELECT count(*) FROM members m WHERE m.audience = a.id) "
                                        "FROM audiences a WHERE deleted = 0 ORDER BY id").fetchall()
                return self._json(200, {"data": [{"id": r[0], "name": r[1], "account": r[2], "members": r[3]} for r in rows]}, {})
            if path == "/_sandbox/members":
                return self._json(200, {"data": sorted(self.member_keys(query.get("audience_id", "")))}, {})
            if path == "/_sandbox/stats":
                counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
                counters["resent_replace_batches"] = self.resent_replace_batches()
                return self._json(200, counters, {})
        return self._json(404, {"error": {"message": f"unknown sandbox endpoint {path}"}}, {})

    def close(self) -> None:
        self._db.close()


class SandboxServer:
    """The sandbox on a real loopback HTTP port; use as a context manager or call `stop()`."""

    def __init__(self, sandbox: GraphSandbox, host: str = "127.0.0.1", port: int = 0):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandbox only listens on loopback")
        outer = sandbox

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each keep-alive request waits ~40 ms on delayed ACKs

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                response = outer.handle(self.command, self.path, dict(self.headers.items()), body)
                if response.reset:  # close with RST (linger 0), as a proxy or a load balancer may
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if response.drop:
                    time.sleep(outer.config.faults.delay_seconds)
                    self.close_connection = True
                    return
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:  # requests carry tokens in headers only, but stay quiet
                pass

        self.sandbox = sandbox
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="meta-sandbox", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m audience_assets.standins.graph_sandbox --state graph.sqlite --faults throttle:0.15,5xx:0.05,regain0`:
    the sandbox as a Graph API on a loopback port (printed on the first line), for live-mode tests and
    benchmarks: point META_GRAPH_URL at it and set META_ACCESS_TOKEN to `--token`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m audience_assets.standins.graph_sandbox", description=main.__doc__)
    parser.add_argument("--state", default=None, help="SQLite state file (default: in memory)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="sandbox-token")
    parser.add_argument("--account", default="act_1000000001")
    parser.add_argument("--faults", default="", help=Faults.PROFILE_HELP)
    parser.add_argument("--rate-limit", type=int, default=None, help="calls per window per ad account")
    parser.add_argument("--window", type=float, default=3600.0, help="seconds of the rate window")
    args = parser.parse_args(argv)
    config = SandboxConfig(tokens={args.token: ["*"]}, ad_accounts={args.account: {"name": "Sandbox ad account",
                                                                                    "tos_accepted": True}},
                           faults=Faults.parse(args.faults, name="--faults"), rate_limit_calls=args.rate_limit,
                           rate_limit_window_seconds=args.window)
    server = GraphSandbox(args.state, config).serve(port=args.port)
    print(server.url, flush=True)
    threading.Event().wait()

