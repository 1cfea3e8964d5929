"""Liveness of uploads under Meta's throttling, as a property: hypothesis generates what Meta answers.

The server here is a model written from Meta's documents, not the project's sandbox: an ad account's
calls are counted over a rolling window against a budget, other callers spend the same budget, and on
top of that a generated script decides what each of the client's requests meets: a throttle (80003 or
another throttling code) whose usage header reads 100 % with an estimate of 0, a real estimate, an
estimate longer than the window, no header or garbage; a burst of up to 20 refusals; a 5xx (a Graph error
or an HTML page); a timeout before or after the request is applied; or nothing (a normal answer, whose
usage header may itself be absent or garbage). `AudienceUploader` runs a whole add session against it on a
fake clock (each request takes `LATENCY` seconds; the client's sleeps move the clock).

Asserted for every generated sequence:
- every batch is acknowledged and the audience holds exactly the rows sent;
- the upload ends within a bound computed from the sequence (requests x latency, a capped pause per
  refusal and per failure, and the windows the budget needs), so nothing can freeze;
- no single wait is longer than the cap (`throttle_max_seconds`);
- the client wastes few requests on Meta's limit: refusals beyond the script's own stay within a constant,
  not counting calls that come back before Meta's estimate because the cap cut the pause short (the price of
  never sleeping longer than the cap, one call per cap-length pause).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections import deque
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_assets.core.audience.plan import Chunk, Operation, Plan
from audience_assets.core.meta.client import GraphClient, JsonText
from audience_assets.core.meta.ledger import UploadLedger
from audience_assets.core.meta.uploader import AudienceUploader, UploadIncomplete
from audience_assets.core.policies import MetaPolicy
from audience_assets_tests.core.meta.uploads import FakeClock

LATENCY = 0.25
AUDIENCE = "23850000000000001"
ACCOUNT = "1000000001"
THROTTLE_CODES = (80003, 80000, 80004, 80014, 17, 613, 4, 32, 341)
HEADER_KINDS = ("valid", "absent", "garbage")
REFUSAL_HEADERS = ("regain0", "estimate", "beyond_window", "absent", "garbage")


# ##### THE MODEL OF META


@dataclasses.dataclass
class Scenario:
    window: float  # Meta's rolling window (seconds)
    budget: int  # calls per window
    cap: float  # throttle_max_seconds
    batches: int
    script: list[tuple]  # per request of the client: ("ok", header) | ("throttle", code, header) | ("5xx", html) |
    # ("timeout", applied)
    others_per_window: int  # another caller's calls in every window (a steady share of the budget)
    open_sessions: bool = False  # sessions still say "uploading" after their last batch

    @property
    def refusals(self) -> int:
        return sum(1 for event in self.script if event[0] == "throttle")

    @property
    def failures(self) -> int:
        return sum(1 for event in self.script if event[0] in ("5xx", "timeout"))


class MetaModel:
    """The Graph endpoints an upload session uses, with Meta's budget and a script of faults."""

    def __init__(self, scenario: Scenario, clock: FakeClock):
        self.scenario, self.clock = scenario, clock
        self.start = clock()
        self.accepted: deque[float] = deque()  # the client's counted calls (arrival times)
        self.members: set[str] = set()
        self.sessions: dict[int, dict[str, Any]] = {}
        self.requests = 0
        self.budget_refusals = 0
        self.capped_returns = 0  # budget refusals of calls sent before Meta's previous estimate had passed
        self._regained_at = -math.inf

    # what the budget holds at `now`
    def _others(self, now: float) -> int:
        """Another caller's calls in the window: `others_per_window` of them, evenly spaced since long before the
        upload began, so the window always holds that many (the share the client must leave them)."""
        return self.scenario.others_per_window

    def _used(self, now: float) -> int:
        while self.accepted and self.accepted[0] <= now - self.scenario.window:
            self.accepted.popleft()
        return len(self.accepted) + self._others(now)

    def _header(self, kind: str, percent: int, regain_minutes: float) -> dict[str, str]:
        if kind == "absent":
            return {}
        if kind == "garbage":
            return {
                "x-business-use-case-usage": '{"' + ACCOUNT + '": [{"call_count": "lots", "estimated_time_to_r',
                "x-app-usage": "[1, 2",
            }
        usage = {
            ACCOUNT: [
                {
                    "type": "custom_audience",
                    "call_count": percent,
                    "total_cputime": percent // 3,
                    "total_time": percent // 3,
                    "estimated_time_to_regain_access": regain_minutes,
                }
            ]
        }
        return {"x-business-use-case-usage": json.dumps(usage)}

    def _refusal(self, code: int, header: str, now: float) -> httpx.Response:
        regain = {"regain0": 0, "estimate": 1, "beyond_window": math.ceil(3 * self.scenario.window / 60)}.get(header, 0)
        kind = header if header in ("absent", "garbage") else "valid"
        body = {
            "error": {
                "message": "(#80003) There have been too many calls to this ad-account. Wait a bit and try again.",
                "type": "OAuthException",
                "code": code,
                "fbtrace_id": "Amodel",
            }
        }
        return httpx.Response(400, json=body, headers=self._header(kind, 100, regain))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.clock.advance(LATENCY / 2)
        now = self.clock()
        index, self.requests = self.requests, self.requests + 1
        event = self.scenario.script[index] if index < len(self.scenario.script) else ("ok", "valid")
        try:
            if event[0] == "throttle":  # refused whatever the budget: nothing counted, nothing applied
                return self._refusal(event[1], event[2], now)
            if event[0] == "5xx":
                return (
                    httpx.Response(502, text="<html>502 Bad Gateway</html>", headers={"content-type": "text/html"})
                    if event[1]
                    else httpx.Response(
                        500, json={"error": {"code": 2, "is_transient": True, "message": "Service unavailable"}}
                    )
                )
            if event[0] == "timeout" and not event[1]:
                raise httpx.ReadTimeout("model: dropped before it was processed", request=request)
            if self._used(now) >= self.scenario.budget:
                self.budget_refusals += 1
                self.capped_returns += now < self._regained_at
                oldest = self.accepted[0] if self.accepted else now
                regain = max(0, math.ceil((oldest + self.scenario.window - now) / 60))
                self._regained_at = max(self._regained_at, now + 60 * regain)
                return self._refusal(80003, "estimate" if regain else "regain0", now)
            self.accepted.append(now)
            body = self._apply(request)
            percent = 100 * self._used(now) // self.scenario.budget
            response = httpx.Response(
                200, json=body, headers=self._header(event[1] if event[0] == "ok" else "valid", percent, 0)
            )
            if event[0] == "timeout":  # applied, the answer lost
                raise httpx.ReadTimeout("model: answer lost after it was applied", request=request)
            return response
        finally:
            self.clock.advance(LATENCY / 2)

    def _apply(self, request: httpx.Request) -> dict[str, Any]:
        path = request.url.path.rsplit("/", 1)[-1]
        if request.method == "GET" and path == "sessions":
            sid = int(request.url.params["session_id"])
            state = self.sessions.get(sid, {"received": 0, "finished": False})
            return {
                "data": [
                    {
                        "session_id": str(sid),
                        "num_received": str(state["received"]),
                        "num_invalid_entries": "0",
                        "stage": "finished" if state["finished"] and not self.scenario.open_sessions else "uploading",
                        "end_time": "1" if state["finished"] and not self.scenario.open_sessions else "0",
                    }
                ]
            }
        assert request.method == "POST" and path == "users", (request.method, request.url.path)
        sent = json.loads(request.content)
        session = sent["session"]
        state = self.sessions.setdefault(session["session_id"], {"received": 0, "finished": False})
        assert not state["finished"], "a batch after the session's last one"
        rows = sent["payload"]["data"]
        self.members.update(row[0] for row in rows)
        state["received"] += len(rows)
        state["finished"] = bool(session.get("last_batch_flag"))
        return {
            "audience_id": AUDIENCE,
            "session_id": str(session["session_id"]),
            "num_received": state["received"],
            "num_invalid_entries": 0,
            "invalid_entry_samples": {},
        }


class MemoryStore:
    """The ledger's object store, in a dict."""

    @dataclasses.dataclass
    class Obj:
        key: str

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_bytes(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def get_bytes(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def list(self, prefix: str):
        return [self.Obj(k) for k in sorted(self.objects) if k.startswith(prefix)]

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


# ##### RUNNING AN UPLOAD AGAINST IT

ROWS_PER_BATCH = 3


def run_upload(
    scenario: Scenario,
    concurrency: int = 1,
    *,
    deadline: float = 10**9,
    settle: float = 600.0,
    report=lambda line: None,
    progress_every: float = 30.0,
    model: MetaModel | None = None,
    store: MemoryStore | None = None,
):
    clock = model.clock if model else FakeClock()
    model = model or MetaModel(scenario, clock)
    policy = MetaPolicy(
        timeout_seconds=5,
        transient_attempts=scenario.failures + 2,
        throttle_base_seconds=scenario.cap / 15,
        throttle_max_seconds=scenario.cap,
        usage_window_seconds=scenario.window,
        transient_base_seconds=2.0,
        deadline_seconds=deadline,
        concurrency=concurrency,
        settle_seconds=settle,
    )
    client = GraphClient(
        access_token="token-liveness",
        base_url="http://model.invalid",
        policy=policy,
        transport=httpx.MockTransport(model.handle),
        sleep=clock.sleep,
        clock=clock,
        seed=3,
    )
    chunks = tuple(Chunk(i, ROWS_PER_BATCH, f"chunk-{i}") for i in range(scenario.batches))
    plan = Plan("liveness", ("EXTERN_ID",), (Operation("add", chunks),))

    def read_chunk(chunk: Chunk) -> JsonText:
        return JsonText(json.dumps([[f"c{chunk.index}-{r}"] for r in range(chunk.rows)]))

    ledger = UploadLedger(store if store is not None else MemoryStore(), "liveness", AUDIENCE, plan.upload_id)
    uploader = AudienceUploader(
        client,
        ledger,
        read_chunk,
        clock=clock,
        report=report,
        settle_first_seconds=1.0,
        progress_every=progress_every,
    )
    started = clock()
    try:
        result = uploader.run(AUDIENCE, plan)
    finally:
        client.close()
    return result, model, clock, clock() - started


def bound(scenario: Scenario, model: MetaModel) -> float:
    """How long the upload may take, from the sequence: every request's latency; a capped pause for each
    refusal and each failure; and, for the budget, the windows it takes to send every call at the rate the
    budget leaves after the other caller (plus one window for the start)."""
    requests = model.requests
    refusals = scenario.refusals + model.budget_refusals
    room = max(1, scenario.budget - scenario.others_per_window)
    windows = math.ceil(requests / room) + 1
    return requests * LATENCY + (refusals + scenario.failures) * scenario.cap + windows * scenario.window


# ##### GENERATED SEQUENCES


def events() -> st.SearchStrategy[list[tuple]]:
    throttle = st.tuples(st.just("throttle"), st.sampled_from(THROTTLE_CODES), st.sampled_from(REFUSAL_HEADERS))
    single = st.one_of(
        st.tuples(st.just("ok"), st.sampled_from(HEADER_KINDS)),
        throttle,
        st.tuples(st.just("5xx"), st.booleans()),
        st.tuples(st.just("timeout"), st.booleans()),
    )
    burst = st.builds(lambda n, t: [t] * n, st.integers(2, 20), throttle)
    return st.lists(st.one_of(single.map(lambda e: [e]), burst), max_size=25).map(
        lambda parts: [e for part in parts for e in part]
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    window = draw(st.sampled_from([60.0, 600.0, 3600.0]))
    budget = draw(st.integers(4, 60))
    return Scenario(
        window=window,
        budget=budget,
        cap=draw(st.sampled_from([window / 4, window, 900.0])),
        batches=draw(st.integers(1, 40)),
        script=draw(events()),
        others_per_window=draw(st.integers(0, budget // 2)),
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_batch_is_acknowledged_in_bounded_time_without_long_waits(scenario: Scenario):
    result, model, clock, elapsed = run_upload(scenario)
    assert result.dead_letters == 0 and len(result.operations[0].acknowledged_chunks) == scenario.batches
    assert model.members == {f"c{i}-{r}" for i in range(scenario.batches) for r in range(ROWS_PER_BATCH)}
    assert elapsed <= bound(scenario, model), (elapsed, bound(scenario, model))
    assert max(clock.waits, default=0.0) <= scenario.cap + 1e-6
    assert model.budget_refusals - model.capped_returns <= 2, (model.budget_refusals, model.capped_returns)


def test_the_reported_freeze_four_threads_regain_zero_at_full_usage():
    """The trace from the field: 9 batches (1,660 members in 200-row chunks), four upload threads, some calls
    refused with 80003 at call_count 100 and an estimate of 0, an occasional HTTP 500, Meta's real hour and
    a 900 s cap. The upload used to freeze after 3 batches (each thread waiting for a call to leave the hour);
    it ends with every batch acknowledged after a few capped pauses."""
    script = [
        ("ok", "valid"),
        ("throttle", 80003, "regain0"),
        ("ok", "valid"),
        ("throttle", 80003, "regain0"),
        ("5xx", False),
        ("throttle", 80003, "regain0"),
        ("ok", "valid"),
        ("throttle", 80003, "regain0"),
    ] * 2
    scenario = Scenario(window=3600.0, budget=5000, cap=900.0, batches=9, script=script, others_per_window=0)
    result, model, clock, elapsed = run_upload(scenario, concurrency=4)
    assert result.dead_letters == 0 and len(result.operations[0].acknowledged_chunks) == 9
    assert len(model.members) == 9 * ROWS_PER_BATCH
    assert max(clock.waits) <= 900.0
    # four threads' sleeps add up on this clock, so this is pessimistic: 8 refusals, each at most a base pause
    # doubled a few times (60 s, 120 s ...), and one transient back-off; far from the hour per call of the freeze
    assert elapsed < 3600.0, elapsed


# ##### NEVER SILENT, NEVER FOREVER


class SlowModel(MetaModel):
    """Each answer also takes real time, so the progress heartbeat (a wall-clock timer) has time to speak."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        time.sleep(0.02)
        return super().handle(request)


def test_progress_is_told_while_the_upload_runs_waits_included():
    """Lines at the start, on a wall-clock heartbeat, when a long wait begins (with its reason), and at the end:
    batches acknowledged of planned, rows, and the wait in progress."""
    script = [("ok", "valid")] * 3 + [("throttle", 80003, "regain0")] + [("ok", "valid")] * 20
    scenario = Scenario(window=3600.0, budget=5000, cap=900.0, batches=12, script=script, others_per_window=0)
    lines: list[str] = []
    clock = FakeClock()
    result, _, _, _ = run_upload(scenario, report=lines.append, progress_every=0.05, model=SlowModel(scenario, clock))
    assert result.dead_letters == 0
    assert re.search(r": 0/12 batches acknowledged, 0/36 rows$", lines[0])
    assert re.search(r": 12/12 batches acknowledged, 36/36 rows$", lines[-1])
    throttled = [line for line in lines if "throttled by Meta (code 80003)" in line]
    assert throttled and re.search(
        r"3/12 batches acknowledged, 9/36 rows; throttled by Meta \(code 80003\); no estimate "
        r"from Meta, back-off 1: waiting \d+ s$",
        throttled[0],
    )
    heartbeats = [line for line in lines[1:-1] if line not in throttled]
    assert len(heartbeats) >= 3  # 25 answers of 20 ms each, a heartbeat every 50 ms


def test_an_upload_past_its_deadline_fails_with_dead_letters_that_say_why():
    """Meta keeps refusing (20 refusals, estimate 0): the pauses grow 60, 120, 240 s ... and the next would pass
    the 10-minute deadline, so the batches become dead letters naming the deadline and the throttle, and the
    upload fails with that reason instead of sleeping on."""
    scenario = Scenario(
        window=3600.0,
        budget=5000,
        cap=900.0,
        batches=3,
        script=[("throttle", 80003, "regain0")] * 20,
        others_per_window=0,
    )
    with pytest.raises(UploadIncomplete) as caught:
        run_upload(scenario, deadline=600.0)
    message = str(caught.value)
    assert "3 of 3 batch(es)" in message and "deadline of 600 s passed" in message
    assert "throttled by Meta (code 80003)" in message and "the next run re-sends them" in message


def test_the_dead_letters_of_a_passed_deadline_are_in_the_ledger():
    scenario = Scenario(
        window=3600.0,
        budget=5000,
        cap=900.0,
        batches=2,
        script=[("throttle", 80003, "regain0")] * 20,
        others_per_window=0,
    )
    store = MemoryStore()
    with pytest.raises(UploadIncomplete):
        run_upload(scenario, deadline=600.0, store=store)
    letters = [json.loads(v) for k, v in store.objects.items() if "/dead_letters/" in k]
    assert len(letters) == 2 and all(d["error_class"] == "deadline" and "80003" in d["message"] for d in letters)


def test_a_session_meta_leaves_open_is_polled_with_back_off_then_recorded():
    """After its last batch the session still reads "uploading": polled at 1, 2, 4 ... s up to the settle
    time, then recorded in the ledger and reported, and the upload completes."""
    scenario = Scenario(
        window=3600.0, budget=5000, cap=900.0, batches=2, script=[], others_per_window=0, open_sessions=True
    )
    lines: list[str] = []
    store = MemoryStore()
    result, model, clock, elapsed = run_upload(scenario, settle=100.0, report=lines.append, store=store)
    assert result.dead_letters == 0 and len(result.open_sessions) == 1
    [session] = [json.loads(v) for k, v in store.objects.items() if k.endswith("sessions/add.json")]
    assert session["meta_stage"] == "uploading" and session["finished"] is True
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]  # the next (64 s) would pass 100 s
    assert model.requests == 2 + 1 + 7  # two batches, the count read before the last one, seven looks after it
    assert any(f"session {result.open_sessions[0]}" in line and "as uploading after 100 s" in line for line in lines)
    assert "complete.json" in " ".join(store.objects)  # the upload itself is done
