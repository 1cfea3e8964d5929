"""The pacer against a model of Meta's rolling-window budget, on a simulated clock.

The model counts calls arriving within the last `window` seconds and answers `floor(100 x count /
budget)` percent, or refuses (80003) at the budget, like the sandbox. Calls take `latency` seconds and
up to `concurrency` are in flight, so the pacer never knows exactly which calls the server counted.
"""

from __future__ import annotations

import heapq
import math

import pytest

from audience_assets.meta.client import Pacer


class WouldWait(Exception):
    """Raised by the simulated sleep: the simulator lets time pass (and answers arrive) instead."""

    def __init__(self, seconds: float):
        self.seconds = seconds


def simulate(budget: int, window: float, concurrency: int, calls: int, latency: float = 0.13,
             engage_at: int = 50) -> tuple[float, int, Pacer]:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        raise WouldWait(seconds)

    pacer = Pacer(window, sleep=sleep, clock=lambda: clock[0], engage_at=engage_at, max_pause=window)
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
                pacer.observe(number, 100, 60.0)
            else:
                pacer.observe(number, usage, 0.0)
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
