"""The pacer against a model of Meta's rolling-window budget, on a simulated clock.

The model counts calls arriving within the last `window` seconds and answers `floor(100 x count /
budget)` percent, or refuses (80003) at the budget, like the sandbox. Calls take `latency` seconds and
up to `concurrency` are in flight, so the pacer never knows exactly which calls the server counted.
"""

from __future__ import annotations

import heapq
import math
import random

import pytest

from audience_assets.core.meta.pacer import DeadlineExceeded, Pacer


class WouldWait(Exception):
    """Raised by the simulated sleep: the simulator lets time pass (and answers arrive) instead."""

    def __init__(self, seconds: float):
        self.seconds = seconds


def simulate(
    budget: int, window: float, concurrency: int, calls: int, latency: float = 0.13, engage_at: int = 50
) -> tuple[float, int, Pacer]:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        raise WouldWait(seconds)

    pacer = Pacer(window, sleep=sleep, clock=lambda: clock[0], engage_at=engage_at, max_pause=window, base_pause=60.0)
    arrivals: list[float] = []
    in_flight: list[tuple[float, int, int]] = []  # (answer time, call number, usage or -1 when refused)
    sent = refused = 0
    while sent < calls or in_flight:
        wake = math.inf
        if sent < calls and len(in_flight) < concurrency:
            try:
                number = pacer.before_call()
            except WouldWait as wait:
                wake = clock[0] + wait.seconds
            else:
                arrival = clock[0] + latency / 2
                recent = [t for t in arrivals if t > arrival - window]
                if len(recent) >= budget:
                    usage = -1
                else:
                    arrivals.append(arrival)
                    usage = min(100, math.floor(100 * (len(recent) + 1) / budget))
                heapq.heappush(in_flight, (clock[0] + latency, number, usage))
                sent += 1
                continue
        if in_flight and in_flight[0][0] <= wake:
            answered_at, number, usage = heapq.heappop(in_flight)
            clock[0] = max(clock[0], answered_at)
            if usage < 0:
                refused += 1
                pacer.refused(number, 60.0, "throttled")
            else:
                pacer.accepted(number, usage)
        else:
            clock[0] = wake
    return clock[0], refused, pacer


@pytest.mark.parametrize(("budget", "window", "concurrency"), [(20, 10.0, 4), (100, 60.0, 8), (37, 30.0, 3)])
def test_the_budget_is_spent_evenly_and_never_overrun(budget, window, concurrency):
    calls = budget * 6
    elapsed, refused, pacer = simulate(budget, window, concurrency, calls)
    assert refused == 0
    assert pacer.budget == budget  # worked out from the percentages alone
    best = (calls - 1) // budget * window  # budget calls per window, back to back
    assert best / elapsed >= 0.95, (elapsed, best)


def test_the_same_load_without_pacing_is_refused():
    """Control: the model does refuse calls beyond the budget when nothing holds them back."""
    _, refused, pacer = simulate(20, 10.0, 4, 120, engage_at=101)
    assert refused > 0 and pacer.budget is None


# ##### THE RULES, ONE BY ONE (see meta.pacer)


class Clock:
    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def pacer_on(clock: Clock, **options) -> Pacer:
    return Pacer(
        3600.0,
        clock.sleep,
        clock,
        **{"engage_at": 50, "max_pause": 900.0, "base_pause": 60.0, "rand": random.Random(4), **options},
    )


def test_a_refusal_is_never_evidence_about_the_budget():
    """Rule 1: refusals at call_count 100 (estimate 0, or an estimate longer than the window) change neither the
    budget nor what has been proven; only the pause."""
    clock = Clock()
    pacer = pacer_on(clock)
    for usage in (10, 20, 30):  # budget 10: 1, 2, 3 of 10 calls
        pacer.accepted(pacer.before_call(), usage)
    before = (pacer.budget, pacer.proven)
    for regain in (0.0, None, 3 * 3600.0):
        pacer.refused(pacer.before_call(), regain, "throttled")
    assert (pacer.budget, pacer.proven) == before


def test_pauses_are_capped_and_grow_only_when_a_later_call_is_refused():
    """Rules 2 and 4: without an estimate the pause is base, 2 x base ... (jitter 0.8-1.2), capped; calls that
    were in flight when the first refusal came do not grow it; an accepted call sent later resets it."""
    clock = Clock()
    pacer = pacer_on(clock, max_pause=200.0)
    in_flight = [pacer.before_call() for _ in range(4)]
    first = pacer.refused(in_flight[0], 0.0, "throttled")
    assert 48 <= first <= 72
    assert all(pacer.refused(n, None, "throttled") <= first for n in in_flight[1:])  # no growth
    pauses = [first]
    for _ in range(4):
        number = pacer.before_call()  # waits out the pause first
        pauses.append(pacer.refused(number, None, "throttled"))
    assert 96 <= pauses[1] <= 144 and 192 <= pauses[2] <= 200 and pauses[3:] == [200.0, 200.0]
    assert max(clock.sleeps) <= 200.0
    pacer.accepted(pacer.before_call(), 10)
    assert 48 <= pacer.refused(pacer.before_call(), None, "throttled") <= 72
    assert 900 * 1.0 <= pacer_on(Clock()).refused(0, 7200.0, "throttled") <= 900  # an estimate beyond the cap: the cap


def test_the_budget_never_drops_below_what_was_proven():
    """Rule 3: an answer that explains Meta's figure by a tiny budget cannot pull the estimate below the
    calls Meta already accepted within one window."""
    clock = Clock()
    pacer = pacer_on(clock)
    for _ in range(30):
        pacer.accepted(pacer.before_call(), 0)  # no usage figure worth learning from: nothing paced
    assert pacer.proven == 30 and pacer.budget is None
    pacer.accepted(pacer.before_call(), 100)  # "at the limit": the budget is at most 31 calls
    assert pacer.budget == 31  # at least the 31 Meta accepted, whatever the lowest consistent budget (1)


def test_waiting_stops_at_the_deadline_and_says_why():
    """Rule 2: a wait that would pass the deadline raises instead, naming what it waited for."""
    clock = Clock()
    pacer = pacer_on(clock)
    pacer.refused(pacer.before_call(), 600.0, "throttled by Meta (code 80003)")
    with pytest.raises(DeadlineExceeded, match=r"throttled by Meta \(code 80003\).*would pass the deadline"):
        pacer.before_call(deadline=clock.now + 300)
    assert clock.sleeps == []


def test_pacing_holds_only_until_the_oldest_counted_call_leaves_the_window():
    """Rule 5: at the budget, a call waits for the oldest of this client's counted calls to leave the window,
    never longer: at least `budget` calls go out per window."""
    clock = Clock()
    pacer = pacer_on(clock)
    for n in range(1, 11):  # budget 10, answers at 10 %, 20 % ... 100 %, one a second
        pacer.accepted(pacer.before_call(), 10 * n)
        clock.now += 1.0
    assert pacer.budget == 10
    pacer.before_call()
    assert clock.sleeps and sum(clock.sleeps) <= 3600.0 and max(clock.sleeps) <= 900.0
    assert clock.now >= 3600.0  # the first call (answered at 0 s) had to leave Meta's hour
