"""A Graph API client for customer-list Custom Audiences (httpx), as a Meta engineer would write it.

* The token travels in the `Authorization` header only, never in a URL or a log line; with an app
  secret, every call carries `appsecret_proof` = HMAC-SHA256(app secret, token).
* Every call has a timeout. POST and DELETE send JSON bodies (a DELETE with a 10,000-row payload in
  its query string is how other clients fail). A body's `JsonText` values (an upload's rows, encoded
  by DuckDB) go in as they stand: 140,000 cells are never Python objects.
* Errors are classified by `code`/`error_subcode`: a throttled call pauses every thread (Meta's
  `estimated_time_to_regain_access` when positive, else exponential back-off with jitter) and is retried
  until the deadline; transient errors are retried briefly; fatal ones stop at once with code, subcode,
  fbtrace_id and the fix.
* The pacer (`meta.pacer`) reads the usage headers and slows down before the limit instead of after it;
  every wait happens there, none longer than `throttle_max_seconds`.
* Requests that are not safe to repeat (creating an audience, the first batch of a replace) are never
  retried blindly after a timeout: the caller reconciles first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from audience_assets.core.graph_api import DEFAULT_GRAPH_URL
from audience_assets.core.meta.errors import ErrorClass, MetaApiError, MetaTransportError, hint_for, redact
from audience_assets.core.meta.pacer import Pacer
from audience_assets.core.meta.versions import default_version
from audience_assets.core.policies import MetaPolicy

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO; a GET's query carries appsecret_proof, which stays out of logs.
logging.getLogger("httpx").setLevel(logging.WARNING)
DEFAULT_API_VERSION = default_version()  # see meta.versions


class JsonText(str):
    """A value that already is JSON text (e.g. rows DuckDB's `to_json` encoded): `encode_body` puts it
    in the body as it stands instead of encoding it again."""


def encode_body(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON, with `JsonText` parts spliced in unchanged."""

    def text(v: Any) -> str:
        if isinstance(v, JsonText):
            return str(v)
        if isinstance(v, Mapping):
            # a key that is not text is named as `json` names it (True -> "true", 1 -> "1")
            return (
                "{"
                + ",".join(
                    f"{json.dumps(k if isinstance(k, str) else json.dumps(k), ensure_ascii=False)}:{text(x)}"
                    for k, x in v.items()
                )
                + "}"
            )
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(text(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=False, allow_nan=False)

    return text(value).encode("utf-8")


@dataclasses.dataclass
class CallStats:
    """What the client did, for metadata and metrics (no payloads)."""

    requests: int = 0
    throttled: int = 0
    transient_failures: int = 0
    retries: int = 0
    latency_seconds: float = 0.0  # the time spent waiting lives in the pacer (`waited`, `longest_wait`)
    version_warning: str = ""  # Meta's X-Ad-Api-Version-Warning: the version called was upgraded (retired)

    def add(self, **changes: float) -> None:
        for name, value in changes.items():
            setattr(self, name, getattr(self, name) + value)


@dataclasses.dataclass(frozen=True)
class Usage:
    """What Meta's usage headers said: the highest share used (percent) and when access returns (seconds).
    Either is None when the headers were absent or malformed."""

    percent: int | None
    regain_seconds: float | None


def _number(value: Any) -> float:
    """A usage figure: a non-negative number (bool and text are malformed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"not a usage figure: {value!r}")
    return float(value)


def usage_from_headers(headers: Mapping[str, str]) -> Usage:
    """Meta's `X-Business-Use-Case-Usage` ({id: [{type, call_count, total_cputime, total_time,
    estimated_time_to_regain_access (minutes)}]}) and `X-App-Usage` ({call_count, total_cputime, total_time}).
    A header that is absent or malformed in any part contributes nothing."""
    percents: list[float] = []
    regains: list[float] = []
    raw = headers.get("x-business-use-case-usage")
    if raw:
        try:
            found_p, found_r = [], []
            for entries in json.loads(raw).values():
                for entry in entries:
                    found_p += [_number(entry[k]) for k in ("call_count", "total_cputime", "total_time") if k in entry]
                    if "estimated_time_to_regain_access" in entry:
                        found_r.append(60.0 * _number(entry["estimated_time_to_regain_access"]))
            percents += found_p
            regains += found_r
        except (ValueError, AttributeError, TypeError, KeyError):
            pass
    raw_app = headers.get("x-app-usage")
    if raw_app:
        try:
            app = json.loads(raw_app)
            percents += [_number(app[k]) for k in ("call_count", "total_cputime", "total_time") if k in app]
        except (ValueError, AttributeError, TypeError, KeyError):
            pass
    return Usage(int(max(percents)) if percents else None, max(regains) if regains else None)


class GraphClient:
    """Thread-safe Graph API client: one per ad account and token.

    `deadline` (a time on `clock`) bounds every call: an upload sets it for all its calls; otherwise each call
    has `policy.deadline_seconds` from its start. All waiting happens in `pacer` (see `meta.pacer`)."""

    def __init__(
        self,
        *,
        access_token: str,
        base_url: str = DEFAULT_GRAPH_URL,
        api_version: str = DEFAULT_API_VERSION,
        app_secret: str | None = None,
        transport: httpx.BaseTransport | None = None,
        policy: MetaPolicy = MetaPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        max_connections: int = 8,
    ):
        if not access_token:
            raise ValueError("no Meta access token: set META_ACCESS_TOKEN (or use the local sandbox)")
        self._token, self._secret = access_token, app_secret
        self.policy, self.clock = policy, clock
        self._random = random.Random(seed)
        self.stats = CallStats()
        self._stats_lock = threading.Lock()
        self.deadline: float | None = None
        self.pacer = Pacer(
            policy.usage_window_seconds,
            sleep,
            clock,
            engage_at=policy.pace_from_percent,
            max_pause=policy.throttle_max_seconds,
            base_pause=policy.throttle_base_seconds,
            rand=random.Random(self._random.random()),
        )
        self._http = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/{api_version}/",
            transport=transport,
            timeout=httpx.Timeout(policy.timeout_seconds, connect=min(10.0, policy.timeout_seconds)),
            headers={"Authorization": f"Bearer {access_token}", "User-Agent": "audience_assets"},
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def close(self) -> None:
        self._http.close()

    def _proof(self) -> dict[str, str]:
        if not self._secret:
            return {}
        return {"appsecret_proof": hmac.new(self._secret.encode(), self._token.encode(), hashlib.sha256).hexdigest()}

    def _count(self, **changes: float) -> None:
        with self._stats_lock:
            self.stats.add(**changes)

    def _redact(self, text: str) -> str:
        """`text` with the token, the app secret and the proof scrubbed (and anything shaped like them)."""
        proof = self._proof().get("appsecret_proof", "")
        return redact(text, tuple(s for s in (self._token, self._secret, proof) if s))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        retry_on_timeout: bool = True,
    ) -> dict[str, Any]:
        """Send one Graph request with retries chosen by error class; returns the decoded JSON body.

        Throttled calls are retried until the deadline (raising `DeadlineExceeded`), transient failures
        `transient_attempts` times. With `retry_on_timeout=False`, a timeout or a lost connection raises
        `MetaTransportError` (the request may have been applied) instead of sending it again.
        """
        deadline = self.deadline if self.deadline is not None else self.clock() + self.policy.deadline_seconds
        transient = 0
        while True:
            call = self.pacer.before_call(deadline)
            started = time.monotonic()
            try:
                response = self._send(method, path, params, body)
            except httpx.TransportError as error:  # timeouts, refused or reset connections, protocol errors
                self.pacer.lost(call)
                self._count(requests=1, transient_failures=1, latency_seconds=time.monotonic() - started)
                transient += 1
                self._retry_lost_connection(f"{method} {path}", error, transient, retry_on_timeout, deadline)
                continue
            self._count(requests=1, latency_seconds=time.monotonic() - started)
            self._note_version_warning(response)
            usage = usage_from_headers(response.headers)
            payload = self._decode(response)
            if "error" not in payload:
                self.pacer.accepted(call, usage.percent)
                return payload
            error = self._error(payload["error"], response.status_code)
            if error.error_class is ErrorClass.THROTTLED:
                self._pause_throttled(call, error, usage, method, path)
                continue  # the pause is waited out in before_call, by every thread
            self.pacer.lost(call)  # an error (or an edge page): Meta may have counted the call, it proves nothing
            if error.error_class is not ErrorClass.TRANSIENT:
                raise error
            transient += 1
            self._retry_transient_error(
                f"{method} {path}", error, response.status_code, payload, transient, retry_on_timeout, deadline
            )

    def _send(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Mapping[str, Any] | None
    ) -> httpx.Response:
        """One HTTP call, proof attached: a GET in its query, anything else in a JSON body (never a query string)."""
        if method == "GET":
            return self._http.get(path, params={**(params or {}), **self._proof()})
        return self._http.request(
            method,
            path,
            params=params,
            content=encode_body({**(body or {}), **self._proof()}),
            headers={"Content-Type": "application/json"},
        )

    def _retry_lost_connection(
        self, call: str, error: httpx.TransportError, attempt: int, retry_on_timeout: bool, deadline: float
    ) -> None:
        """A call that did not complete may have been applied: raise unless it is safe to repeat, else back off."""
        if not retry_on_timeout:
            raise MetaTransportError(
                f"{call} did not complete ({type(error).__name__}); it may have been applied"
            ) from None
        if attempt >= self.policy.transient_attempts:
            raise MetaTransportError(f"{call} failed {attempt} times ({type(error).__name__}); giving up") from None
        self._back_off(attempt, f"{call} did not complete ({type(error).__name__})", deadline)

    def _note_version_warning(self, response: httpx.Response) -> None:
        """Log Meta's first version warning once: the version called was retired and silently upgraded."""
        warning = response.headers.get("x-ad-api-version-warning")
        if warning and not self.stats.version_warning:
            self.stats.version_warning = self._redact(warning)[:300]
            log.warning("Meta: %s (X-Ad-Api-Version-Warning); set META_API_VERSION", self.stats.version_warning)

    def _pause_throttled(self, call: int, error: MetaApiError, usage: Usage, method: str, path: str) -> None:
        """Tell the pacer Meta refused the call, so every thread pauses before the retry."""
        self._count(throttled=1)
        what = f"code {error.code}" + (f"/{error.subcode}" if error.subcode else "")
        pause = self.pacer.refused(call, usage.regain_seconds, f"throttled by Meta ({what})")
        self._count(retries=1)
        log.info("Meta throttled %s %s (%s): pausing %.0f s", method, path, what, pause)

    def _retry_transient_error(
        self,
        call: str,
        error: MetaApiError,
        status: int,
        payload: Mapping[str, Any],
        attempt: int,
        retry_on_timeout: bool,
        deadline: float,
    ) -> None:
        """A transient error is retried briefly; an edge page on an unsafe call is raised (applied or not, unknown)."""
        self._count(transient_failures=1)
        if payload.get("_html") and not retry_on_timeout:  # applied or not, unknown
            raise MetaTransportError(f"{call} got HTTP {status} without a Graph error body; it may have been applied")
        if attempt >= self.policy.transient_attempts:
            raise error
        self._back_off(attempt, f"{call}: Meta answered HTTP {status} (code {error.code})", deadline)

    def _back_off(self, attempt: int, why: str, deadline: float) -> None:
        """Wait before retrying a transient failure: base, 2 x base, 4 x base ... with jitter (at most the cap)."""
        seconds = min(self.policy.transient_base_seconds * 2 ** (attempt - 1), self.policy.throttle_max_seconds)
        seconds = min(seconds * self._random.uniform(0.8, 1.2), self.policy.throttle_max_seconds)
        self._count(retries=1)
        log.info("%s: retrying in %.1f s", why, seconds)
        self.pacer.wait(seconds, why, deadline)

    def _decode(self, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            return payload
        if response.status_code >= 500 or response.status_code == 429:  # an edge error page: retry like code 2
            return {
                "_html": True,
                "error": {
                    "code": 2,
                    "is_transient": True,
                    "message": f"HTTP {response.status_code} without a Graph error body",
                },
            }
        return {
            "error": {
                "code": 1,
                "message": f"unexpected response (HTTP {response.status_code}, "
                f"{response.headers.get('content-type', 'no content type')})",
            }
        }

    def _error(self, error: Mapping[str, Any], status: int) -> MetaApiError:
        """The error as the client keeps it: every string Meta (or a proxy in front of it) sent is scrubbed of
        the token, the app secret and the proof before it reaches an exception, a log line or a ledger file;
        codes that are not numbers are dropped."""

        def text(key: str) -> str | None:
            value = error.get(key)
            return self._redact(str(value))[:300] if value is not None else None

        def number(key: str) -> int | None:
            value = error.get(key)
            return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None

        code, subcode = number("code"), number("error_subcode")
        return MetaApiError(
            text("message") or "unknown error",
            code=code,
            subcode=subcode,
            error_type=text("type"),
            fbtrace_id=text("fbtrace_id"),
            status=status,
            is_transient=bool(error.get("is_transient")),
            hint=hint_for(code, subcode),
        )

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any], *, retry_on_timeout: bool = True) -> dict[str, Any]:
        return self.request("POST", path, body=body, retry_on_timeout=retry_on_timeout)

    def delete(self, path: str, body: Mapping[str, Any], *, retry_on_timeout: bool = True) -> dict[str, Any]:
        return self.request("DELETE", path, body=body, retry_on_timeout=retry_on_timeout)
