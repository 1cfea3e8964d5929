"""GraphClient and AudienceManager against the Graph API sandbox over real HTTP on loopback.

What is checked (from Meta's Graph API error-handling and rate-limiting guides and the Custom Audience
references): the token travels only in
the `Authorization` header, `appsecret_proof` accompanies every call when an app secret is configured,
every call has a timeout, DELETE carries its payload in the body, retries follow the error class
(transient retried briefly, throttles wait Meta's `estimated_time_to_regain_access`, fatal errors raise at
once with code, subcode and fbtrace_id), find-or-create never creates twice, preflight explains what to fix,
and no token or secret ever reaches an exception message.

Back-off waits are recorded by an injected `sleep` instead of being slept, so nothing here waits on the
wall clock except the explicit timeout test.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from audience_assets.core import layout
from audience_assets.core.config import Audience
from audience_assets.core.meta.binding import bind
from audience_assets.core.meta.client import DEFAULT_API_VERSION, GraphClient, JsonText, encode_body
from audience_assets.core.meta.errors import ErrorClass, MetaApiError, MetaPreflightError, MetaTransportError
from audience_assets.core.meta.manager import AudienceManager
from audience_assets.core.meta.pacer import DeadlineExceeded
from audience_assets.core.policies import MetaPolicy
from audience_assets.core.store import LocalStore
from audience_assets.standins.graph_sandbox import Faults, GraphSandbox, SandboxConfig, SandboxResponse, SandboxServer

TOKEN = "tok-Client-Secret-7f3a9c"
ACCOUNT = "act_1000000001"
APP_SECRET = "appsecret-Client-51d2e8"
TARGET = Audience(meta_name="target", select={"partner": {}})
CREATE = {"subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY", "description": "client test"}


# ##### HELPERS


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def proof(token: str = TOKEN, secret: str = APP_SECRET) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


class RecordingSandbox(GraphSandbox):
    """The sandbox keeps no request log (its HTTP handler does not even log request lines), so this wraps
    `handle`, the one entry point both adapters call, to record what arrived on the wire and what was
    answered. `drop_next` loses the next create: "before" (never processed) or "after" (applied, the
    answer lost), like the sandbox's timeout faults but aimed at one request."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.requests: list[dict[str, Any]] = []
        self.drop_next: str | None = None

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> SandboxResponse:
        record = {
            "method": method,
            "raw_path": raw_path,
            "headers": {k.lower(): v for k, v in headers.items()},
            "body": body,
        }
        self.requests.append(record)
        is_create = method == "POST" and urlsplit(raw_path).path.endswith("/customaudiences")
        if is_create and self.drop_next == "before":
            self.drop_next = None
            record["status"] = "dropped"
            return SandboxResponse(504, b"", {}, drop=True)
        response = super().handle(method, raw_path, headers, body)
        if is_create and self.drop_next == "after":
            self.drop_next = None
            response.drop = True
        record["status"] = "dropped" if response.drop else response.status
        return response

    def api_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if not r["raw_path"].startswith("/_sandbox/")]


class FakeTime:
    """One clock for the sandbox and the client; the client's `sleep` records the wait and moves the clock."""

    def __init__(self, waits: list[float] | None = None, during_sleep: Any = None) -> None:
        self.now = 1_750_000_000.0
        self.waits: list[float] = waits if waits is not None else []
        self.during_sleep = during_sleep  # called on each sleep: the world changes while the client waits

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        if self.during_sleep is not None:
            self.during_sleep(seconds)


def sandbox_config(**changes: Any) -> SandboxConfig:
    base: dict[str, Any] = dict(
        tokens={TOKEN: ["*"]},
        ad_accounts={ACCOUNT: {"name": "client tests", "tos_accepted": True}},
        expired_tokens=["tok-Expired-000"],
    )
    base.update(changes)
    return SandboxConfig(**base)


def make_client(
    url: str,
    *,
    token: str = TOKEN,
    waits: list[float] | None = None,
    app_secret: str | None = None,
    clock: FakeTime | None = None,
    **changes: Any,
) -> GraphClient:
    """A client on a fake clock: its waits are recorded (in `waits`, or the clock's) and move the clock."""
    policy = MetaPolicy(
        **{
            "timeout_seconds": 5.0,
            "transient_attempts": 4,
            "transient_base_seconds": 2.0,
            "throttle_base_seconds": 30.0,
            **changes,
        }
    )
    clock = clock or FakeTime(waits)
    return GraphClient(
        access_token=token, base_url=url, app_secret=app_secret, policy=policy, sleep=clock.sleep, clock=clock, seed=7
    )


def raw(sandbox: GraphSandbox) -> httpx.Client:
    """A plain in-process client on the same sandbox state, for setting the scene."""
    return httpx.Client(
        transport=sandbox.transport(),
        base_url=f"http://127.0.0.1/{DEFAULT_API_VERSION}/",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


def create(sandbox: GraphSandbox, name: str, **fields: Any) -> str:
    response = raw(sandbox).post(f"{ACCOUNT}/customaudiences", json={"name": name, **CREATE, **fields})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def users_body(names: list[str], **session: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"payload": {"schema": ["EMAIL"], "data": [[sha(n)] for n in names]}}
    if session:
        body["session"] = session
    return body


def assert_no_secrets(error: BaseException, *secrets: str) -> None:
    for text in (str(error), repr(error), getattr(error, "api_message", "") or ""):
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into {text!r}"


@contextlib.contextmanager
def serving(sandbox: GraphSandbox) -> Iterator[SandboxServer]:
    """`sandbox.serve()`, stopped promptly: `SandboxServer.stop()` waits for the server loop's next poll
    (half a second), so the loop is woken with empty loopback connections until it has stopped."""
    server = sandbox.serve()
    try:
        yield server
    finally:
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        while stopping.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(server.httpd.server_address[:2], timeout=0.2).close()
            stopping.join(0.01)


@pytest.fixture
def sandbox() -> RecordingSandbox:
    sb = RecordingSandbox(config=sandbox_config())
    yield sb
    sb.close()


@pytest.fixture
def server(sandbox: RecordingSandbox):
    with serving(sandbox) as srv:
        yield srv


# ##### THE TOKEN AND THE APP SECRET PROOF ON THE WIRE


def test_token_travels_only_in_the_authorization_header(sandbox: RecordingSandbox, server):
    """The sandbox would accept `access_token` in a URL (Graph does), so only the wire record can tell:
    every request carries `Authorization: Bearer <token>`, and no URL or body carries the token."""
    assert raw(sandbox).get("me", params={"access_token": TOKEN}, headers={"Authorization": ""}).status_code == 200
    sandbox.requests.clear()
    client = make_client(server.url)
    audience_id = client.post(f"{ACCOUNT}/customaudiences", {"name": "wire", **CREATE})["id"]
    client.get(audience_id, fields="id,name")
    client.post(f"{audience_id}/users", users_body(["a", "b"]))
    client.delete(f"{audience_id}/users", users_body(["a"]))
    client.get(f"{audience_id}/sessions")
    client.close()
    seen = sandbox.api_requests()
    assert [r["method"] for r in seen] == ["POST", "GET", "POST", "DELETE", "GET"]
    for request in seen:
        assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in unquote(request["raw_path"]) and "access_token" not in request["raw_path"]
        assert TOKEN.encode() not in request["body"] and b"access_token" not in request["body"]
        assert request["status"] == 200


def test_appsecret_proof_accompanies_every_call_when_configured():
    """With an app secret, GET carries appsecret_proof in the query and POST/DELETE in the body; without it or with
    a wrong secret the call fails once (fatal) as a GraphMethodException 100."""
    sandbox = RecordingSandbox(config=sandbox_config(app_secret=APP_SECRET))
    with serving(sandbox) as srv:
        client = make_client(srv.url, app_secret=APP_SECRET)
        audience_id = client.post(f"{ACCOUNT}/customaudiences", {"name": "proved", **CREATE})["id"]
        assert client.get(audience_id, fields="name")["name"] == "proved"
        client.post(f"{audience_id}/users", users_body(["a", "b"]))
        client.delete(f"{audience_id}/users", users_body(["a"]))
        client.close()
        get, post, delete = (
            next(r for r in sandbox.api_requests() if r["method"] == m) for m in ("GET", "POST", "DELETE")
        )
        assert parse_qs(urlsplit(get["raw_path"]).query)["appsecret_proof"] == [proof()]
        assert json.loads(post["body"])["appsecret_proof"] == proof()
        assert json.loads(delete["body"])["appsecret_proof"] == proof()
        assert APP_SECRET not in json.dumps([r["raw_path"] for r in sandbox.requests])
        assert all(APP_SECRET.encode() not in r["body"] for r in sandbox.requests)
        assert len(sandbox.member_keys(audience_id)) == 1

        for secret, message in ((None, "require an appsecret_proof"), ("wrong-secret-xyz", "Invalid appsecret_proof")):
            waits: list[float] = []
            other = make_client(srv.url, app_secret=secret, waits=waits)
            with pytest.raises(MetaApiError) as caught:
                other.get(ACCOUNT)
            other.close()
            assert (caught.value.code, caught.value.error_type) == (100, "GraphMethodException")
            assert message in str(caught.value)
            assert waits == [] and other.stats.requests == 1
            assert_no_secrets(
                caught.value, TOKEN, APP_SECRET, "wrong-secret-xyz", proof(), proof(secret="wrong-secret-xyz")
            )


def test_no_proof_is_sent_without_an_app_secret(sandbox: RecordingSandbox, server):
    """No app secret, no appsecret_proof parameter."""
    client = make_client(server.url)
    client.get(ACCOUNT)
    client.post(f"{ACCOUNT}/customaudiences", {"name": "plain", **CREATE})
    client.close()
    assert all("appsecret_proof" not in r["raw_path"] and b"appsecret_proof" not in r["body"] for r in sandbox.requests)


# ##### TIMEOUTS AND DELETE BODIES


def test_every_call_has_a_timeout():
    """A server that never answers costs `timeout_seconds`, not forever (the sandbox stalls 2 s here)."""
    sandbox = GraphSandbox(config=sandbox_config(faults=Faults(timeout_before=1.0, delay_seconds=2.0)))
    with serving(sandbox) as server:
        client = make_client(server.url, timeout_seconds=0.3)
        started = time.monotonic()
        with pytest.raises(MetaTransportError) as caught:
            client.post(f"{ACCOUNT}/customaudiences", {"name": "slow", **CREATE}, retry_on_timeout=False)
        elapsed = time.monotonic() - started
        client.close()
    assert "ReadTimeout" in str(caught.value) and "may have been applied" in str(caught.value)
    assert elapsed < 1.5
    assert_no_secrets(caught.value, TOKEN)


def test_delete_carries_its_payload_in_the_body(sandbox: RecordingSandbox, server):
    """Removals go as DELETE with a JSON body: a 10,000-row payload never lands in the URL."""
    audience_id = create(sandbox, "deletes")
    rows = [f"user{i}@example.com" for i in range(10_000)]
    for part in (rows[:5_000], rows[5_000:] + ["keep@example.com"]):
        assert raw(sandbox).post(f"{audience_id}/users", json=users_body(part)).status_code == 200
    sandbox.requests.clear()
    client = make_client(server.url)
    session = {"session_id": 4242, "batch_seq": 1, "last_batch_flag": True, "estimated_num_total": 10_000}
    response = client.delete(f"{audience_id}/users", users_body(rows, **session))
    client.close()
    assert response == {
        "audience_id": audience_id,
        "session_id": "4242",
        "num_received": 10_000,
        "num_invalid_entries": 0,
        "invalid_entry_samples": {},
    }
    [request] = sandbox.api_requests()
    assert request["method"] == "DELETE"
    assert request["raw_path"] == f"/{DEFAULT_API_VERSION}/{audience_id}/users"  # no query string at all
    assert request["headers"]["content-type"] == "application/json"
    body = json.loads(request["body"])
    assert len(body["payload"]["data"]) == 10_000 and body["session"] == session
    assert len(sandbox.member_keys(audience_id)) == 1


def test_rows_encoded_elsewhere_go_into_the_body_as_they_stand(sandbox: RecordingSandbox, server):
    """An upload's rows arrive as JSON text (DuckDB encodes them): the client splices that text into the
    body unchanged, and the request is the one the same rows as Python lists would make."""
    audience_id = create(sandbox, "spliced")
    rows = [[sha("a"), 'say "hi" \\ Zoë 😀'], [sha("b"), ""]]
    session = {"session_id": 77, "batch_seq": 1, "last_batch_flag": True, "estimated_num_total": 2}
    body = {"payload": {"schema": ["EMAIL", "EXTERN_ID"], "data": rows, "is_raw": True}, "session": session}
    spliced = {**body, "payload": {**body["payload"], "data": JsonText(json.dumps(rows))}}
    assert encode_body(body) == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    odd_keys = {True: 1, None: [1.5, None], 7: "x"}
    assert encode_body(odd_keys) == json.dumps(odd_keys, separators=(",", ":")).encode()
    assert json.loads(encode_body(spliced)) == body and json.dumps(rows).encode() in encode_body(spliced)
    sandbox.requests.clear()
    client = make_client(server.url, app_secret=APP_SECRET)
    response = client.post(f"{audience_id}/users", spliced)
    client.close()
    assert response["num_received"] == 2 and response["num_invalid_entries"] == 0
    [request] = sandbox.api_requests()
    assert request["headers"]["content-type"] == "application/json"
    assert json.loads(request["body"]) == {**body, "appsecret_proof": proof()}


# ##### RETRIES BY ERROR CLASS


def test_transient_server_errors_are_retried_until_the_outage_ends():
    """A 5xx is transient: retried after a short back-off (transient_base_seconds with jitter)."""
    sandbox = GraphSandbox(config=sandbox_config(faults=Faults(server_error=1.0, seed=1)))
    waits: list[float] = []

    def outage_ends(seconds: float) -> None:  # the outage ends while the client waits
        sandbox.config.faults.server_error = 0.0

    clock = FakeTime(waits, during_sleep=outage_ends)
    with serving(sandbox) as server:
        client = GraphClient(
            access_token=TOKEN,
            base_url=server.url,
            sleep=clock.sleep,
            clock=clock,
            seed=7,
            policy=MetaPolicy(timeout_seconds=5, transient_base_seconds=2.0),
        )
        result = client.post(f"{ACCOUNT}/customaudiences", {"name": "after outage", **CREATE})
        client.close()
    assert result["id"] == sandbox.audience_id("after outage")
    assert len(waits) == 1 and 1.6 <= waits[0] <= 2.4
    assert (client.stats.requests, client.stats.transient_failures, client.stats.retries) == (2, 1, 1)


def test_transient_errors_back_off_exponentially_then_raise():
    """5xx (JSON code 2 with is_transient, or an HTML edge page) are retried with doubling waits, then raised."""
    sandbox = GraphSandbox(config=sandbox_config(faults=Faults(server_error=1.0, seed=2)))
    waits: list[float] = []
    with serving(sandbox) as server:
        client = make_client(server.url, waits=waits, transient_attempts=5, transient_base_seconds=1.0)
        with pytest.raises(MetaApiError) as caught:
            client.get(f"{ACCOUNT}/customaudiences")
        client.close()
    assert caught.value.code == 2 and caught.value.error_class is ErrorClass.TRANSIENT
    assert len(waits) == 4 and client.stats.requests == 5
    for n, wait in enumerate(waits):
        assert 0.8 * 2**n <= wait <= 1.2 * 2**n


def test_an_html_error_page_on_a_non_repeatable_call_is_ambiguous():
    """An edge 502 page says nothing about whether the request was applied: with retry_on_timeout=False it is
    a MetaTransportError; a Graph 500 (code 2) is a definite failure and stays a MetaApiError."""
    sandbox = GraphSandbox(config=sandbox_config(faults=Faults(server_error=1.0, seed=4)))
    outcomes = set()
    with serving(sandbox) as server:
        client = make_client(server.url, transient_attempts=1)
        for i in range(20):
            with pytest.raises((MetaTransportError, MetaApiError)) as caught:
                client.post(f"{ACCOUNT}/customaudiences", {"name": f"edge {i}", **CREATE}, retry_on_timeout=False)
            if isinstance(caught.value, MetaTransportError):
                assert "HTTP 502 without a Graph error body" in str(caught.value)
                outcomes.add("ambiguous")
            else:
                assert (caught.value.code, caught.value.status, caught.value.is_transient) == (2, 500, True)
                outcomes.add("transient")
        client.close()
    assert outcomes == {"ambiguous", "transient"}


def test_throttles_wait_the_estimated_time_to_regain_access():
    """When the ad account's budget is spent (by another caller here), the 80003 answer's usage header says
    how many minutes until access returns; the client waits that long once, then succeeds."""
    fake = FakeTime()
    sandbox = GraphSandbox(config=sandbox_config(rate_limit_calls=2, rate_limit_window_seconds=300), clock=fake)
    other_caller = raw(sandbox)
    assert [other_caller.get(ACCOUNT).status_code for _ in range(2)] == [200, 200]
    with serving(sandbox) as server:
        client = make_client(server.url, clock=fake, usage_window_seconds=300, throttle_base_seconds=30.0)
        started = fake.now
        audiences = client.get(f"{ACCOUNT}/customaudiences")
        client.close()
    assert audiences == {"data": []}
    assert client.stats.throttled == 1 and sandbox.counter("throttled") == 1
    assert 0.8 * 300 <= fake.waits[0] <= 1.2 * 300  # 5 minutes from the header, not the 30 s base back-off
    assert fake.now - started >= 300


def test_throttles_without_an_estimate_back_off_exponentially_until_the_deadline():
    """An 80003 without estimated_time_to_regain_access pauses 30 s, 60 s, 120 s, 240 s (± 20 %): retried until
    the next pause would pass the call's deadline, which then fails with what it was waiting for."""
    sandbox = GraphSandbox(config=sandbox_config(faults=Faults(throttle=1.0, throttle_headers=("none",))))
    waits: list[float] = []
    with serving(sandbox) as server:
        client = make_client(server.url, waits=waits, throttle_base_seconds=30.0, deadline_seconds=600)
        with pytest.raises(
            DeadlineExceeded, match=r"throttled by Meta \(code 80003\).*no estimate from Meta"
        ) as caught:
            client.get(f"{ACCOUNT}/customaudiences")
        client.close()
    assert "would pass the deadline" in str(caught.value)
    assert client.stats.throttled == 5 and len(waits) == 4
    for n, wait in enumerate(waits):
        assert 0.8 * 30 * 2**n <= wait <= 1.2 * 30 * 2**n


def test_a_busy_audience_is_waited_out_like_a_throttle(sandbox: RecordingSandbox, server):
    """2650/1870145 (a replace is running) clears by waiting; the retry goes through once it finished."""
    audience_id = create(sandbox, "busy")
    replace = lambda seq, last: raw(sandbox).post(  # noqa: E731
        f"{audience_id}/usersreplace", json=users_body(["r"], session_id=9, batch_seq=seq, last_batch_flag=last)
    )
    assert replace(1, False).status_code == 200
    waits: list[float] = []

    def other_upload_finishes(seconds: float) -> None:
        assert replace(2, True).status_code == 200

    clock = FakeTime(waits, during_sleep=other_upload_finishes)
    client = GraphClient(
        access_token=TOKEN,
        base_url=server.url,
        sleep=clock.sleep,
        clock=clock,
        seed=7,
        policy=MetaPolicy(timeout_seconds=5, throttle_base_seconds=30.0),
    )
    response = client.post(f"{audience_id}/users", users_body(["late"]))
    client.close()
    assert response["num_received"] == 1 and len(waits) == 1 and client.stats.throttled == 1
    assert len(sandbox.member_keys(audience_id)) == 2


@pytest.mark.parametrize(
    "case, code, subcode",
    [
        ("unknown audience", 100, 33),
        ("expired token", 190, 463),
        ("flagged audience", 100, 1713230),
        ("replace without batch 1", 2650, 1870147),
        ("bad payload", 100, None),
    ],
)
def test_fatal_errors_are_raised_at_once_with_code_subcode_and_trace(
    sandbox: RecordingSandbox, server, case: str, code: int, subcode: int | None
):
    """Fatal errors are not retried: one request, no wait, and the error carries code, subcode and fbtrace_id."""
    audience_id = create(sandbox, "fatal")
    token, method, path, body = TOKEN, "POST", f"{audience_id}/users", users_body(["a"])
    if case == "unknown audience":
        path = "23859999999999999/users"
    elif case == "expired token":
        token = "tok-Expired-000"
    elif case == "flagged audience":
        sandbox.flag(audience_id)
    elif case == "replace without batch 1":
        path, body = f"{audience_id}/usersreplace", users_body(["a"], session_id=3, batch_seq=2)
    else:
        body = {"payload": {"schema": ["EMAIL", "PHONE"], "data": [["a"]]}}
    waits: list[float] = []
    client = make_client(server.url, token=token, waits=waits)
    sandbox.requests.clear()
    with pytest.raises(MetaApiError) as caught:
        client.request(method, path, body=body)
    client.close()
    error = caught.value
    assert (error.code, error.subcode, error.error_class, error.status) == (
        code,
        subcode,
        ErrorClass.FATAL,
        403 if code == 200 else 400,
    )
    assert error.fbtrace_id and error.fbtrace_id.startswith("A") and error.fbtrace_id in str(error)
    assert f"code {code}" + (f"/{subcode}" if subcode else "") in str(error)
    assert waits == [] and len(sandbox.api_requests()) == 1
    assert_no_secrets(error, TOKEN, "tok-Expired-000")


def test_retry_on_timeout_false_raises_and_the_request_may_have_been_applied():
    """A non-repeatable call whose answer is lost raises MetaTransportError instead of being sent again."""
    sandbox = GraphSandbox(config=sandbox_config(faults=Faults(timeout_after=1.0)))
    waits: list[float] = []
    with serving(sandbox) as server:
        client = make_client(server.url, waits=waits)
        with pytest.raises(MetaTransportError) as caught:
            client.post(f"{ACCOUNT}/customaudiences", {"name": "applied", **CREATE}, retry_on_timeout=False)
        client.close()
    assert "may have been applied" in str(caught.value)
    assert waits == [] and client.stats.requests == 1
    assert sandbox.audience_id("applied") is not None  # it was: retrying blindly would have made two
    assert_no_secrets(caught.value, TOKEN)


def test_lost_connections_are_retried_when_safe_then_given_up():
    """Repeatable calls are retried after lost connections, up to transient_attempts."""
    sandbox = GraphSandbox(config=sandbox_config(faults=Faults(timeout_before=1.0)))
    waits: list[float] = []
    with serving(sandbox) as server:
        client = make_client(server.url, waits=waits, transient_attempts=3)
        with pytest.raises(MetaTransportError) as caught:
            client.get(f"{ACCOUNT}/customaudiences")
        client.close()
    assert "failed 3 times" in str(caught.value)
    assert len(waits) == 2 and client.stats.transient_failures == 3


# ##### FIND-OR-CREATE


def test_an_unbound_audience_is_found_by_name_across_pages_before_one_is_created(
    sandbox: RecordingSandbox, server, tmp_path
):
    """With nothing bound yet, the audience is looked up by name (here on the second page of 200) instead of
    created a second time; once bound, later syncs hold the binding without listing the account again."""
    for i in range(205):
        create(sandbox, f"filler {i:03d}")
    client = make_client(server.url)
    manager = AudienceManager(client, ACCOUNT)
    store = LocalStore(tmp_path)
    created = bind(store, manager, "target", TARGET)
    assert (created.event, created.created) == ("created", True)
    store.delete(layout.binding("target"))  # the store lost its record of the binding...
    found = bind(store, manager, "target", TARGET)  # ...it is found by name, not made again
    requests = len(sandbox.api_requests())
    held = bind(store, manager, "target", TARGET)
    by_id = [r["raw_path"].split("?")[0] for r in sandbox.api_requests()[requests:]]
    assert manager.find("filler 003")["id"] == sandbox.audience_id("filler 003")
    audience = manager.read(found.meta_audience_id)
    client.close()
    assert found.meta_audience_id == created.meta_audience_id == sandbox.audience_id("target")
    assert (found.event, held.event) == ("found by name", "held")
    listed = raw(sandbox).get(f"{ACCOUNT}/customaudiences", params={"limit": 500, "fields": "name"}).json()["data"]
    assert [a["name"] for a in listed].count("target") == 1
    assert any("after=" in r["raw_path"] for r in sandbox.api_requests())  # it did page
    assert by_id == [f"/v26.0/{held.meta_audience_id}"], "a held binding reads its audience, it lists nothing"
    assert (audience["subtype"], audience["customer_file_source"], audience["retention_days"]) == (
        "CUSTOM",
        "USER_PROVIDED_ONLY",
        180,
    )


@pytest.mark.parametrize("lost", ["after", "before"])
def test_a_lost_create_makes_exactly_one_audience(sandbox: RecordingSandbox, server, lost: str):
    """Creating is not idempotent: after a lost answer the name is looked up before creating again."""
    client = make_client(server.url)
    sandbox.drop_next = lost
    created = AudienceManager(client, ACCOUNT).create(
        "fragile", description="d", customer_file_source="USER_PROVIDED_ONLY", retention_days=30
    )
    client.close()
    assert created["id"] == sandbox.audience_id("fragile")
    creates = [r for r in sandbox.api_requests() if r["method"] == "POST"]
    assert [r["status"] for r in creates] == (["dropped"] if lost == "after" else ["dropped", 200])
    listed = raw(sandbox).get(f"{ACCOUNT}/customaudiences", params={"fields": "name"}).json()["data"]
    assert [a["name"] for a in listed] == ["fragile"]


def test_manager_rejects_a_malformed_ad_account_id():
    """The ad account id must look like act_<digits> (META_AD_ACCOUNT_ID)."""
    client = GraphClient(
        access_token=TOKEN,
        base_url="http://127.0.0.1:9",
        transport=httpx.MockTransport(lambda request: httpx.Response(500)),
    )
    with pytest.raises(ValueError, match="act_<digits>"):
        AudienceManager(client, "1000000001")


# ##### PREFLIGHT


def test_preflight_passes_for_a_usable_custom_audience(sandbox: RecordingSandbox, server):
    """A working token, accepted terms and a Normal CUSTOM audience pass; preflight returns the audience."""
    audience_id = create(sandbox, "ready")
    client = make_client(server.url)
    audience = AudienceManager(client, ACCOUNT).preflight(audience_id)
    client.close()
    assert audience["id"] == audience_id and audience["subtype"] == "CUSTOM"
    assert audience["operation_status"] == {"code": 200, "description": "Normal"}


@pytest.mark.parametrize(
    "token, hint",
    [
        ("tok-Wrong-123456", "create a new system-user token and set META_ACCESS_TOKEN"),
        ("tok-Expired-000", "invalid or expired"),
    ],
)
def test_preflight_with_a_bad_token(sandbox: RecordingSandbox, server, token: str, hint: str):
    """An invalid or expired token (190) stops preflight at once with the fix: a new token in META_ACCESS_TOKEN."""
    audience_id = create(sandbox, "ready")
    sandbox.requests.clear()
    client = make_client(server.url, token=token)
    with pytest.raises(MetaPreflightError) as caught:
        AudienceManager(client, ACCOUNT).preflight(audience_id)
    client.close()
    message = str(caught.value)
    assert "access token does not work" in message and hint in message and "code 190" in message
    assert_no_secrets(caught.value, token, TOKEN)
    assert len(sandbox.api_requests()) == 1  # nothing else was tried with a dead token


def test_preflight_with_a_flagged_audience(sandbox: RecordingSandbox, server):
    """operation_status 471 stops preflight with the fix: rename and resolve in Ads Manager."""
    audience_id = create(sandbox, "flagged")
    sandbox.flag(audience_id)
    client = make_client(server.url)
    with pytest.raises(MetaPreflightError) as caught:
        AudienceManager(client, ACCOUNT).preflight(audience_id)
    client.close()
    assert f"flagged audience {audience_id} (operation_status 471)" in str(caught.value)
    assert "rename it and resolve it in Ads Manager" in str(caught.value)


def test_preflight_with_terms_not_accepted(sandbox: RecordingSandbox, server):
    """Unaccepted Custom Audience terms stop preflight with the link to accept them for this account."""
    audience_id = create(sandbox, "terms")
    sandbox.config.ad_accounts[ACCOUNT]["tos_accepted"] = False
    client = make_client(server.url)
    with pytest.raises(MetaPreflightError) as caught:
        AudienceManager(client, ACCOUNT).preflight(audience_id)
    client.close()
    assert "Custom Audience terms are not accepted for act_1000000001" in str(caught.value)
    assert "https://business.facebook.com/ads/manage/customaudiences/tos/?act=1000000001" in str(caught.value)


def test_preflight_with_a_non_custom_audience(sandbox: RecordingSandbox, server):
    """Only CUSTOM audiences take customer lists: preflight names the subtype and the fix."""
    response = raw(sandbox).post(f"{ACCOUNT}/customaudiences", json={"name": "site visitors", "subtype": "WEBSITE"})
    audience_id = response.json()["id"]
    client = make_client(server.url)
    with pytest.raises(MetaPreflightError) as caught:
        AudienceManager(client, ACCOUNT).preflight(audience_id)
    client.close()
    assert "has subtype WEBSITE" in str(caught.value) and "choose another meta_name" in str(caught.value)


# ##### SECRETS NEVER REACH EXCEPTION MESSAGES


def test_errors_from_the_sandbox_carry_no_token_or_secret():
    """Throttle, bad-token and bad-proof errors name neither the token, the app secret nor the proof."""
    sandbox = GraphSandbox(config=sandbox_config(app_secret=APP_SECRET, faults=Faults(throttle=1.0)))
    with serving(sandbox) as server:
        errors: list[BaseException] = []
        for token, secret in ((TOKEN, APP_SECRET), ("tok-Unknown-999999", APP_SECRET), (TOKEN, "appsecret-Wrong-777")):
            client = make_client(server.url, token=token, app_secret=secret, deadline_seconds=1)
            with pytest.raises((MetaApiError, DeadlineExceeded)) as caught:
                client.get(ACCOUNT)
            client.close()
            errors.append(caught.value)
    assert [getattr(e, "code", "80003" in str(e) and 80003) for e in errors] == [80003, 190, 100]
    for error in errors:
        assert_no_secrets(error, TOKEN, APP_SECRET, "tok-Unknown-999999", "appsecret-Wrong-777", proof())


def echoing_client(answer: Callable[[httpx.Request], httpx.Response]) -> GraphClient:
    """A client with a token and an app secret whose every call is answered by `answer` (a stand-in proxy)."""
    return GraphClient(
        access_token=TOKEN,
        app_secret=APP_SECRET,
        base_url="http://127.0.0.1",
        transport=httpx.MockTransport(answer),
        sleep=lambda s: None,
    )


def test_an_error_echoing_the_credentials_is_redacted():
    """Should Graph (or a proxy) echo the token, the proof or the secret, the client's error does not."""

    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers["authorization"]
        message = f"Bad request from {sent}; access_token={TOKEN}&appsecret_proof={proof()}; secret {APP_SECRET}"
        return httpx.Response(
            400, json={"error": {"message": message, "type": "OAuthException", "code": 100, "fbtrace_id": "Aecho"}}
        )

    client = echoing_client(echo)
    with pytest.raises(MetaApiError) as caught:
        client.get(ACCOUNT)
    assert_no_secrets(caught.value, TOKEN, APP_SECRET, proof())
    assert "***" in str(caught.value)


def test_credentials_echoed_in_any_field_are_scrubbed_everywhere_the_error_goes():
    """A proxy echoing the token, the secret or the proof in fbtrace_id, type or a non-numeric code: the
    exception's text and every attribute (what the ledger's dead letters and the logs copy) are clean."""

    def echo(request: httpx.Request) -> httpx.Response:
        leak = f"{TOKEN}|{APP_SECRET}|{proof()}"
        body = {
            "message": "denied",
            "type": f"Proxy {leak}",
            "code": f"x{TOKEN}",
            "error_subcode": "33",
            "fbtrace_id": f"A{leak}",
            "error_user_msg": leak,
        }
        return httpx.Response(403, json={"error": body})

    client = echoing_client(echo)
    with pytest.raises(MetaApiError) as caught:
        client.get(ACCOUNT)
    error = caught.value
    assert (error.code, error.subcode) == (None, 33)
    assert_no_secrets(error, TOKEN, APP_SECRET, proof())
    for value in vars(error).values():
        assert not any(secret in str(value) for secret in (TOKEN, APP_SECRET, proof()))
