"""The ad account's rate budget, as Meta's business-use-case limit works: calls counted over a rolling window,
the share used reported on every answer (`X-Business-Use-Case-Usage`, `X-App-Usage`), and 80003 once it is
spent, with `estimated_time_to_regain_access`. Injected throttles (see `faults`) answer here too."""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from audience_assets.standins.graph_sandbox.validation import GraphError

if TYPE_CHECKING:
    from audience_assets.standins.graph_sandbox.config import SandboxConfig


class RateBudget:
    def __init__(self, config: SandboxConfig, clock: Callable[[], float], rand: random.Random):
        self.config, self.clock, self.random = config, clock, rand
        self.calls: dict[str, deque[float]] = {}

    def limit(self, account: str) -> int | None:
        """Calls per window for `account`: its own `rate_limit_calls`, else the sandbox-wide one."""
        return self.config.ad_accounts.get(account, {}).get("rate_limit_calls", self.config.rate_limit_calls)

    def charge(self, account: str, forced: bool) -> None:
        limit = self.limit(account)
        now = self.clock()
        calls = self.calls.setdefault(account, deque())
        window = self.config.rate_limit_window_seconds
        while calls and calls[0] <= now - window:
            calls.popleft()
        message = (
            "(#80003) There have been too many calls to this ad-account. Wait a bit and try again. For more info, "
            "please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting."
        )
        if limit is not None and len(calls) >= limit:
            wait = calls[0] + window - now
            raise GraphError(400, 80003, message, usage_minutes=max(0, math.ceil(wait / 60)))
        if forced:  # an injected throttle: its header reads as the profile says (see Faults)
            kind = self.random.choice(self.config.faults.throttle_headers)
            raise GraphError(
                400, 80003, message, usage_minutes=1 if kind == "estimate" else 0, usage_header=kind != "none"
            )
        calls.append(now)

    def usage_headers(self, account: str | None, regain_minutes: int = 0, *, throttled: bool = False) -> dict[str, str]:
        if account is None:
            return {}
        limit = self.limit(account)
        now = self.clock()
        calls = self.calls.get(account, deque())
        recent = sum(1 for t in calls if t > now - self.config.rate_limit_window_seconds)
        pct = 100 if throttled else min(100, int(100 * recent / limit)) if limit else 0
        usage = {
            account.removeprefix("act_"): [
                {
                    "type": "custom_audience",
                    "call_count": pct,
                    "total_cputime": pct // 2,
                    "total_time": pct // 2,
                    "estimated_time_to_regain_access": regain_minutes,
                    "ads_api_access_tier": "standard_access",
                }
            ]
        }
        return {
            "x-business-use-case-usage": json.dumps(usage),
            "x-app-usage": json.dumps({"call_count": pct // 4, "total_cputime": pct // 8, "total_time": pct // 8}),
        }
