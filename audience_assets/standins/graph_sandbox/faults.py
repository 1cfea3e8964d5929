"""The sandbox's fault injection: what can go wrong between a client and Meta, drawn per request."""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any


@dataclasses.dataclass
class Faults:
    """Injected failures, drawn per API request from a seeded generator (probabilities 0..1).

    `throttle_headers` says how an injected throttle's usage header reads, one drawn per throttle:
    "estimate" (usage 100 %, access back in a minute), "regain0" (usage 100 %, estimate 0: Meta's header
    promises nothing more) or "none" (no usage header at all)."""

    server_error: float = 0.0  # 500 with a transient Graph error (or an HTML page)
    timeout_before: float = 0.0  # the request is dropped before it is processed
    timeout_after: float = 0.0  # processed, then the response is lost: the nasty case
    throttle: float = 0.0  # an 80003 although the budget is not used up
    reset: float = 0.0  # the connection is reset before the request is processed
    slow: float = 0.0  # the answer comes `slow_seconds` late (drawn apart from the others)
    slow_seconds: float = 2.0
    throttle_headers: tuple[str, ...] = ("estimate",)
    open_sessions: bool = False  # sessions still report "uploading" after their last batch
    delay_seconds: float = 0.0  # how long the HTTP server stalls before dropping a connection
    seed: int = 0

    PROFILE_HELP = (
        "comma-separated: throttle:P, 5xx:P, timeout_before:P, timeout_after:P, reset:P, slow:P, "
        "slow_seconds:S, regain0, noheader, estimate, open_sessions, seed:N (P a probability 0..1)"
    )

    @classmethod
    def parse(cls, profile: str, *, name: str = "META_SANDBOX_FAULTS") -> Faults:
        """A fault profile such as "throttle:0.15,5xx:0.05,regain0,noheader,reset:0.02,slow:0.05"."""
        rates = {
            "throttle": "throttle",
            "5xx": "server_error",
            "server_error": "server_error",
            "reset": "reset",
            "timeout_before": "timeout_before",
            "timeout_after": "timeout_after",
            "slow": "slow",
        }
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

    def draw(self, rng: random.Random) -> str | None:
        """This request's fault, if any: one roll against the rates in turn (they add up to at most 1), after
        a separate roll for a slow answer, which sleeps here."""
        if self.slow and rng.random() < self.slow:
            time.sleep(self.slow_seconds)
        roll = rng.random()
        for name, p in (
            ("server_error", self.server_error),
            ("timeout_before", self.timeout_before),
            ("timeout_after", self.timeout_after),
            ("throttle", self.throttle),
            ("reset", self.reset),
        ):
            if roll < p:
                return name
            roll -= p
        return None
