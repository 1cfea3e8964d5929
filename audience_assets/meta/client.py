"""A Graph API client for customer-list Custom Audiences (httpx), as a Meta engineer would write it.

* The token travels in the `Authorization` header only, never in a URL or a log line; with an app
  secret, every call carries `appsecret_proof` = HMAC-SHA256(app secret, token).
* Every call has a timeout. POST and DELETE send JSON bodies (a DELETE with a 10,000-row payload in
  its query string is how other clients fail). A body's `JsonText` values (an upload's rows, encoded
  by DuckDB) go in as they stand: 140,000 cells are never Python objects.
* Errors are classified by `code`/`error_subcode`: throttling waits for Meta's
  `estimated_time_to_regain_access` (or backs off exponentially with jitter), transient errors are
  retried briefly, fatal ones stop at once with code, subcode, fbtrace_id and the fix.
* A pacer reads the usage headers and slows down before the limit instead of after it.
* Requests that are not safe to repeat (creating an audience, the first batch of a replace) are never
  retried blindly after a timeout: the caller reconciles first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from audience_assets.meta.errors import ErrorClass, MetaApiError, MetaTransportError, hint_for, redact

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO; a GET's query carries appsecret_proof, which stays out of logs.
logging.getLogger("httpx").setLevel(logging.WARNING)
DEFAULT_GRAPH_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v25.0"


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
            return "{" + ",".join(f"{json.dumps(k if isinstance(k, str) else json.dumps(k), ensure_ascii=False)}:{text(x)}"
                                  for k, x in v.items()) + "}"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(text(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=False, allow_nan=False)
    return text(value).encode("utf-8")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying, by error class. Meta's BUC windows are an hour: waits are long."""

    timeout_seconds: float = 60.0
    transient_attempts: int = 5
    transient_base_seconds: float = 2.0
    throttle_attempts: int = 12
    throttle_base_seconds: float = 60.0
    throttle_max_seconds: float = 900.0
    usage_window_seconds: float = 3600.0  # Meta's business-use-case limits count calls over a rolling hour
    pace_from_percent: int = 50           # from this reported usage on, calls are paced to the window's budget


@dataclasses.dataclass
class CallStats:
    """What the client did, for metadata and metrics (no payloads)."""

    requests: int = 0
    throttled: int = 0
    transient_failures: int = 0
    retries: int = 0
    seconds_waiting: float = 0.0
    latency_seconds: float = 0.0

    def add(self, **changes: float) -> None:
        for name, value in changes.items():
            setattr(self, name, getattr(self, name) + value)


class Pacer:
    """Keeps this client's calls inside the rolling window Meta's usage headers report on.

    Meta counts an ad account's calls in a rolling window (an hour for business-use-case limits) and
    reports the share used (`call_count`, a whole percent of the budget) on every response, never the
    budget itself. The pacer remembers when each of its calls was sent and answered, and works the budget
    out: an answer reporting `u` percent for a call sent at `s` and answered at `a` means the server then
    counted `r` calls with u = floor(100 r / budget), where r is at least this call plus those sent after
    `a - window` and answered before `s`, and at most the calls sent before `a` and not answered by
    `s - window`. The budgets consistent with every answer so far are kept; the smallest is used. From
    `engage_at` percent on, a call goes out only while fewer calls than that budget may still be counted
    (a call counts until a window after its answer): the budget is spent as fast as the window frees it,
    and no faster. Below `engage_at` calls go out freely. A throttle pauses every thread for Meta's
    `estimated_time_to_regain_access` (at most `max_pause`).
    """

    def __init__(self, window_seconds: float, sleep: Callable[[float], None], clock: Callable[[], float], *,
                 engage_at: int = 50, max_pause: float = math.inf):
        self.window, self.engage_at, self.max_pause = window_seconds, engage_at, max_pause
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._calls: dict[int, list[Any]] = {}  # number -> [sent at, answered at or None, refused by a throttle]
        self._numbers = itertools.count()
        self._candidates: set[int] | None = None  # budgets consistent with every answer so far
        self.budget: int | None = None  # calls per window, once the usage headers have told
        self._regain_at = 0.0
        self.waited = 0.0

    def _prune(self, now: float) -> None:
        stale = [n for n, (_, answered, _) in self._calls.items() if answered is not None and answered <= now - 2 * self.window]
        for number in stale:
            del self._calls[number]

    def before_call(self) -> int:
        """Wait until a call may go out; returns its number (pass it to `observe` or `abandon`)."""
        while True:
            with self._lock:
                now = self._clock()
                self._prune(now)
                wait = self._regain_at - now
                if wait <= 0 and self.budget is not None:
                    counting = [a for _, a, refused in self._calls.values() if not refused and (a is None or a > now - self.window)]
                    if len(counting) >= self.budget:
                        answered = [a for a in counting if a is not None]
                        # until the oldest leaves the window (at least a moment: rounding must not let it through),
                        # or, with every counted call still in flight, until an answer comes
                        wait = max(min(answered) + self.window - now, 0.001) if answered else 0.05
                if wait <= 0:
                    number = next(self._numbers)
                    self._calls[number] = [now, None, False]
                    return number
            self.waited += wait
            self._sleep(wait)

    def abandon(self, number: int) -> None:
        """The call got no answer (timeout): it may have been counted, so it counts for a window."""
        with self._lock:
            if number in self._calls:
                self._calls[number][1] = self._clock()

    @staticmethod
    def _consistent(budget: int, usage: int, least: int, most: int) -> bool:
        """Could the server have counted r in [least, most] calls and reported `usage` percent of `budget`?"""
        if usage >= 100:
            return most >= budget
        low, high = -(-usage * budget // 100), -(-(usage + 1) * budget // 100) - 1  # r with floor(100r/b) = usage
        return max(low, least) <= min(high, most)

    def observe(self, number: int, usage_percent: int, regain_seconds: float) -> None:
        with self._lock:
            now = self._clock()
            call = self._calls.get(number)
            if call is None:
                return
            sent_at = call[0]
            call[1] = now
            if regain_seconds > 0:  # refused: Meta did not count it, and nothing goes out until access is back
                call[2] = True
                self._regain_at = max(self._regain_at, now + min(regain_seconds, self.max_pause))
                return
            if usage_percent < 1:
                return
            others = [c for n, c in self._calls.items() if n != number and not c[2]]
            least = 1 + sum(1 for sent, answered, _ in others
                            if sent > now - self.window and answered is not None and answered < sent_at)
            most = 1 + sum(1 for sent, answered, _ in others
                           if sent < now and (answered is None or answered > sent_at - self.window))
            if self._candidates is not None:
                self._candidates = {b for b in self._candidates if self._consistent(b, usage_percent, least, most)}
            if not self._candidates:  # first answer, or the account has other callers: start from this one
                top = most * 100 // max(1, usage_percent) if usage_percent < 100 else most
                self._candidates = {b for b in range(max(1, least * 100 // (usage_percent + 1)), top + 1)
                                    if self._consistent(b, usage_percent, least, most)}
            if usage_percent >= self.engage_at and self._candidates:
                self.budget = min(self._candidates)


def usage_from_headers(headers: Mapping[str, str]) -> tuple[int, float]:
    """(highest usage percent, seconds until access is regained) from Meta's usage headers."""
    highest, regain = 0, 0.0
    raw = headers.get("x-business-use-case-usage")
    if raw:
        try:
            for entries in json.loads(raw).values():
                for entry in entries:
                    highest = max(highest, *(int(entry.get(k, 0) or 0) for k in ("call_count", "total_cputime", "total_time")))
                    regain = max(regain, 60.0 * float(entry.get("estimated_time_to_regain_access", 0) or 0))
        except (ValueError, AttributeError, TypeError):
            pass
    raw_app = headers.get("x-app-usage")
    if raw_app:
        try:
            app = json.loads(raw_app)
            highest = max(highest, *(int(app.get(k, 0) or 0) for k in ("call_count", "total_cputime", "total_time")))
        except (ValueError, AttributeError, TypeError):
            pass
    return highest, regain


class GraphClient:
    """Thread-safe Graph API client: one per ad account and token."""

    def __init__(self, *, access_token: str, base_url: str = DEFAULT_GRAPH_URL, api_version: str = DEFAULT_API_VERSION,
                 app_secret: str | None = None, transport: httpx.BaseTransport | None = None,
                 retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, seed: int | None = None, max_connections: int = 8):
        if not access_token:
            raise ValueError("no Meta access token: set META_ACCESS_TOKEN (or use the local sandbox)")
        self._token, self._secret = access_token, app_secret
        self.retry, self._sleep = retry, sleep
        self._random = random.Random(seed)
        self.stats = CallStats()
        self._stats_lock = threading.Lock()
        self.pacer = Pacer(retry.usage_window_seconds, sleep, clock, engage_at=retry.pace_from_percent,
                           max_pause=retry.throttle_max_seconds)
        self._http = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/{api_version}/", transport=transport,
            timeout=httpx.Timeout(retry.timeout_seconds, connect=min(10.0, retry.timeout_seconds)),
            headers={"Authorization": f"Bearer {access_token}", "User-Agent": "audience_assets"},
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

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
        return redact(text, tuple(s for s in (self._token, self._secret) if s))

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                body: Mapping[str, Any] | None = None, retry_on_timeout: bool = True) -> dict[str, Any]:
        """Send one Graph request with retries chosen by error class; returns the decoded JSON body.

        With `retry_on_timeout=False`, a timeout or a lost connection raises `MetaTransportError`
        (the request may have been applied) instead of sending it again.
        """
        transient = throttled = 0
        while True:
            call = self.pacer.before_call()
            started = time.monotonic()
            try:
                if method == "GET":
                    response = self._http.get(path, params={**(params or {}), **self._proof()})
                else:
                    response = self._http.request(method, path, params=params,
                                                  content=encode_body({**(body or {}), **self._proof()}),
                                                  headers={"Content-Type": "application/json"})
            except httpx.TransportError as error:  # timeouts, refused or lost connections, protocol errors
                self.pacer.abandon(call)
                self._count(requests=1, transient_failures=1, latency_seconds=time.monotonic() - started)
                if not retry_on_timeout:
                    raise MetaTransportError(f"{method} {path} did not complete ({type(error).__name__}); "
                                             "it may have been applied") from None
                transient += 1
                if transient >= self.retry.transient_attempts:
                    raise MetaTransportError(f"{method} {path} failed {transient} times "
                                             f"({type(error).__name__}); giving up") from None
                self._wait(self.retry.transient_base_seconds * 2 ** (transient - 1), "transient")
                continue
            self._count(requests=1, latency_seconds=time.monotonic() - started)
            usage, regain = usage_from_headers(response.headers)
            self.pacer.observe(call, usage, regain)
            payload = self._decode(response)
            if "error" not in payload:
                return payload
            error = self._error(payload["error"], response.status_code)
            if error.error_class is ErrorClass.THROTTLED:
                throttled += 1
                self._count(throttled=1)
                if throttled >= self.retry.throttle_attempts:
                    raise error
                base = self.retry.throttle_base_seconds * 2 ** (throttled - 1)
                if regain > 0:  # Meta's own estimate: never retry before it (jitter only adds)
                    self._wait(regain, "throttled", jitter=(1.0, 1.2))
                else:
                    self._wait(min(base, self.retry.throttle_max_seconds), "throttled")
                continue
            if error.error_class is ErrorClass.TRANSIENT:
                self._count(transient_failures=1)
                if payload.get("_html") and not retry_on_timeout:  # an edge error page: applied or not, unknown
                    raise MetaTransportError(f"{method} {path} got HTTP {response.status_code} without a Graph "
                                             "error body; it may have been applied")
                transient += 1
                if transient >= self.retry.transient_attempts:
                    raise error
                self._wait(self.retry.transient_base_seconds * 2 ** (transient - 1), "transient")
                continue
            raise error

    def _wait(self, seconds: float, why: str, jitter: tuple[float, float] = (0.8, 1.2)) -> None:
        seconds = min(seconds, self.retry.throttle_max_seconds) * self._random.uniform(*jitter)
        self._count(retries=1, seconds_waiting=seconds)
        log.info("Meta %s: waiting %.1f s before retrying", why, seconds)
        self._sleep(seconds)

    def _decode(self, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            return payload
        if response.status_code >= 500 or response.status_code == 429:  # an edge error page: retry like code 2
            return {"_html": True, "error": {"code": 2, "is_transient": True,
                                             "message": f"HTTP {response.status_code} without a Graph error body"}}
        return {"error": {"code": 1, "message": f"unexpected response (HTTP {response.status_code}, "
                                                f"{response.headers.get('content-type', 'no content type')})"}}

    def _error(self, error: Mapping[str, Any], status: int) -> MetaApiError:
        code, subcode = error.get("code"), error.get("error_subcode")
        return MetaApiError(self._redact(str(error.get("message", "unknown error"))), code=code, subcode=subcode,
                            error_type=error.get("type"), fbtrace_id=error.get("fbtrace_id"), status=status,
                            is_transient=bool(error.get("is_transient")), hint=hint_for(code, subcode))

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any], *, retry_on_timeout: bool = True) -> dict[str, Any]:
        return self.request("POST", path, body=body, retry_on_timeout=retry_on_timeout)

    def delete(self, path: str, body: Mapping[str, Any], *, retry_on_timeout: bool = True) -> dict[str, Any]:
        return self.request("DELETE", path, body=body, retry_on_timeout=retry_on_timeout)
