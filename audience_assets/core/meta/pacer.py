"""Every wait of the Graph client: pacing calls inside the ad account's budget, pausing when Meta refuses
one, backing off after transient failures, and giving up at a deadline instead of sleeping on.

Meta counts an ad account's calls over a rolling window (an hour for the `custom_audience` business use
case) and reports the share used on every answer (`X-Business-Use-Case-Usage`: `call_count` and friends, in
percent, never the budget itself). When the share reaches 100 % it refuses calls (80003 and the other
throttling codes) and may say when access returns (`estimated_time_to_regain_access`, minutes), or may
say 0, or nothing. The pacer keeps uploads alive under all of that by holding to five rules:

1. A refused call is never evidence about the budget, whatever its headers say: it pauses the calls
   that follow, and changes nothing else.
2. No single sleep is longer than `max_pause` (`throttle_max_seconds`), and no wait passes the caller's
   deadline: a wait that would is refused with `DeadlineExceeded`, which says what was being waited for.
3. The budget estimate never drops below `proven`, the most calls Meta accepted within one window.
4. A refusal without a positive estimate (header absent, malformed or 0) pauses for `base`, then 2 x base,
   4 x base ... (jitter 0.8-1.2, at most `max_pause`); the pause grows only when a call sent after the
   previous refusal is refused too (calls already in flight were sent into the same limit), and starts
   again at `base` once a later call is accepted. With a positive estimate the pause is that estimate
   (jitter 1.0-1.2: never retry before it), still at most `max_pause`.
5. Pacing holds a call only while this client's own calls that Meta may still count (in flight, or
   answered within the window) reach the budget, and only until the oldest of them leaves the window: at
   least `budget` calls go out per window, so pacing can slow an upload but never stall it.

The budget is worked out from accepted answers only: an answer reporting `u` percent for a call sent at
`s` and answered at `a` means Meta counted `r` calls with u = floor(100 r / budget), where r is at least
this call plus this client's calls sent after `a - window` and answered before `s`, and at most every
call of this client sent before `a` that may still be counted. Each answer bounds the budget to an
interval; the intervals of all answers are intersected, and a contradiction (another caller spending the
same budget, or a window unlike ours) starts again from the latest answer. Pacing engages once an answer
reports `engage_at` percent or more, and uses the lowest budget consistent with what was seen.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import threading
from collections.abc import Callable


class DeadlineExceeded(RuntimeError):
    """Waiting longer would pass the deadline of the call or upload; the message says what it waited for."""


@dataclasses.dataclass
class _Call:
    sent: float
    answered: float | None = None
    counted: str = "maybe"  # "yes": Meta answered it; "maybe": in flight, lost or failed; "no": refused


@dataclasses.dataclass
class Wait:
    """The wait in progress (for progress reports): why, how long, until when on the pacer's clock."""

    why: str
    seconds: float
    until: float


class Pacer:
    """Shared by every thread of one client. See the module docstring for the rules it holds to."""

    def __init__(
        self,
        window_seconds: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        *,
        engage_at: int,
        max_pause: float,
        base_pause: float,
        rand: random.Random | None = None,
    ):
        if max_pause <= 0 or window_seconds <= 0:
            raise ValueError("the window and the longest pause must be positive")
        self.window, self.engage_at, self.max_pause, self.base_pause = window_seconds, engage_at, max_pause, base_pause
        self._sleep, self._clock = sleep, clock
        self._random = rand or random.Random()
        self._lock = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self._numbers = itertools.count()
        self._bounds: Spans = []  # budgets consistent with the answers since the last contradiction
        self._engaged = False
        self.budget: int | None = None  # calls per window this client paces to; None: not pacing
        self.proven = 0  # the most calls Meta accepted within one window
        self._paused_until = -math.inf
        self._pause_why = ""
        self._level = 0  # refusals in a row (rule 4)
        self._level_since = -math.inf  # when the level last grew: refusals of calls sent before do not grow it
        self.waited = 0.0  # seconds slept, in all
        self.longest_wait = 0.0
        self.current: Wait | None = None
        self._current_lock = threading.Lock()
        self.on_wait: Callable[[Wait], None] | None = None  # told of each wait as it starts (progress reports)

    # ------------------------------------------------------------------ waiting
    def wait(self, seconds: float, why: str, deadline: float | None = None) -> None:
        """Sleep `seconds` (at most `max_pause`) because of `why`, unless that would pass `deadline`."""
        seconds = min(max(seconds, 0.0), self.max_pause)
        now = self._clock()
        if deadline is not None and now + seconds > deadline:
            raise DeadlineExceeded(
                f"{why}: waiting {seconds:,.0f} s more would pass the deadline ({max(0.0, deadline - now):,.0f} s left)"
            )
        with self._current_lock:
            self.waited += seconds
            self.longest_wait = max(self.longest_wait, seconds)
            self.current = wait = Wait(why, seconds, now + seconds)
        if self.on_wait is not None:
            self.on_wait(wait)
        try:
            self._sleep(seconds)
        finally:
            with self._current_lock:
                if self.current is wait:
                    self.current = None

    def before_call(self, deadline: float | None = None) -> int:
        """Wait until a call may go out (rules 2, 4, 5); returns its number, for `accepted`, `refused` or `lost`."""
        while True:
            with self._lock:
                now = self._clock()
                self._forget(now)
                why, seconds = self._hold(now)
                if seconds <= 0:
                    number = next(self._numbers)
                    self._calls[number] = _Call(now)
                    return number
            self.wait(seconds, why, deadline)

    def _hold(self, now: float) -> tuple[str, float]:
        if self._paused_until > now:
            return self._pause_why, self._paused_until - now
        if self.budget is None:
            return "", 0.0
        counted = [
            c
            for c in self._calls.values()
            if c.counted != "no" and (c.answered is None or c.answered > now - self.window)
        ]
        if len(counted) < self.budget:
            return "", 0.0
        answered = [c.answered for c in counted if c.answered is not None]
        why = (
            f"pacing: {len(counted)} calls in Meta's {self.window:,.0f} s window, the ad account's budget is "
            f"about {self.budget}"
        )
        if not answered:  # every counted call is still in flight: the next answer frees nothing, but tells more
            return why, 0.05
        # until the oldest leaves the window (at least a moment: rounding must not let the call through early)
        return why, max(min(answered) + self.window - now, 0.001)

    def _forget(self, now: float) -> None:
        for number in [
            n for n, c in self._calls.items() if c.answered is not None and c.answered <= now - 2 * self.window
        ]:
            del self._calls[number]

    # ------------------------------------------------------------------ answers
    def lost(self, number: int) -> None:
        """The call got no answer Meta vouches for (timeout, reset, an error page, a failed call): Meta may have
        counted it, so it counts for the window, but it proves nothing."""
        with self._lock:
            call = self._calls.get(number)
            if call is not None:
                call.answered = self._clock()

    def refused(self, number: int, regain_seconds: float | None, why: str) -> float:
        """Meta refused the call (rule 1: no evidence about the budget). Pauses every call; returns the pause."""
        with self._lock:
            now = self._clock()
            call = self._calls.get(number)
            sent = call.sent if call is not None else now
            if call is not None:
                call.answered, call.counted = now, "no"
            if sent <= self._level_since:  # in flight when the latest refusal came: the same limit, no longer pause
                return max(0.0, self._paused_until - now)
            self._level += 1
            self._level_since = now
            if regain_seconds is not None and regain_seconds > 0:
                pause = regain_seconds * self._random.uniform(1.0, 1.2)
                reason = f"{why}; Meta estimates access returns in {regain_seconds:,.0f} s"
            else:
                pause = self.base_pause * 2 ** min(self._level - 1, 30) * self._random.uniform(0.8, 1.2)
                reason = f"{why}; no estimate from Meta, back-off {self._level}"
            pause = min(pause, self.max_pause)
            if now + pause > self._paused_until:
                self._paused_until, self._pause_why = now + pause, reason
            return pause

    def accepted(self, number: int, usage_percent: int | None) -> None:
        """Meta answered the call with a result: it counted it. `usage_percent` is the highest usage its
        headers reported, None when they were absent or malformed."""
        with self._lock:
            now = self._clock()
            call = self._calls.get(number)
            if call is None:
                return
            call.answered, call.counted = now, "yes"
            if call.sent > self._level_since:
                self._level = 0
            counted = [c for c in self._calls.values() if c.counted == "yes"]
            self.proven = max(self.proven, sum(1 for c in counted if c.sent > now - self.window))
            if usage_percent is not None and usage_percent >= 1:
                least = sum(1 for c in counted if c.sent > now - self.window and c.answered <= call.sent)  # type: ignore[operator]
                most = sum(
                    1
                    for c in self._calls.values()
                    if c.counted != "no"
                    and c.sent <= now
                    and (c.answered is None or c.answered > call.sent - self.window)
                )
                self._learn(usage_percent, least + 1, max(most, 1))
            if self._engaged:
                self.budget = max(self._bounds[0][0], self.proven) if self._bounds else None

    def _learn(self, usage: int, least: int, most: int) -> None:
        """Intersect the budgets consistent with this answer with those of the earlier ones (rule 3 is kept
        by `accepted`). A contradiction starts again from this answer alone, and an answer no budget explains
        (another caller is spending the same budget) leaves no estimate: the pacer then holds nothing back
        until answers agree again, since a budget worked out from a share of the calls would be too small."""
        answer = consistent_budgets(usage, least, most)
        self._bounds = (intersect(self._bounds, answer) or answer) if self._bounds and answer else answer
        if usage >= self.engage_at:
            self._engaged = True


Spans = list[tuple[int, int]]  # sorted, disjoint, inclusive ranges of whole numbers


def consistent_budgets(usage: int, least: int, most: int) -> Spans:
    """Budgets b for which Meta, having counted some r in [least, most] calls, reports `usage` percent.

    Meta's percentage is taken as floor(100 r / b), so 100 r / (usage + 1) < b <= 100 r / usage; at 100 %
    or more Meta counted at least b calls, so b <= most. The union over r is exact while the range of r is
    small (it is: at most the calls in flight), and its hull beyond that."""
    if usage >= 100:
        return [(1, most)]
    counts = range(least, most + 1) if most - least <= 1000 else (least, most)
    spans = [(100 * r // (usage + 1) + 1, 100 * r // usage) for r in counts]
    if not isinstance(counts, range):
        spans = [(spans[0][0], spans[1][1])]
    merged: Spans = []
    for lo, hi in sorted(s for s in spans if s[0] <= s[1]):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def intersect(a: Spans, b: Spans) -> Spans:
    out: Spans = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out
