"""What a sandbox is configured to be (tokens, ad accounts, versions, limits, faults) and what it answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from audience_assets.core.meta.versions import live_versions, today
from audience_assets.standins.graph_sandbox.faults import Faults


@dataclasses.dataclass
class SandboxConfig:
    tokens: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {"sandbox-token": ["*"]})
    ad_accounts: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=lambda: {"act_1000000001": {"name": "Sandbox ad account", "tos_accepted": True}}
    )
    app_secret: str | None = None  # when set, every call must carry a valid appsecret_proof
    # The versions it answers: by default those live on `today` (or the real date) in Meta's version table
    # (core.meta.versions); a retired one gets 2635, as Meta answers it. min/max_version pin a window instead.
    min_version: int | None = None
    max_version: int | None = None
    today: dt.date | None = None
    upgrade_retired: bool = False  # answer a retired version as the oldest live one, with the warning header
    permissions: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # token -> granted (default: all)
    rate_limit_calls: int | None = None  # per ad account per rolling window; None = unlimited
    rate_limit_window_seconds: float = 3600.0
    faults: Faults = dataclasses.field(default_factory=Faults)
    expired_tokens: list[str] = dataclasses.field(default_factory=list)
    lookalike_populating_reads: int = 0  # a new lookalike reports operation_status 441 for this many reads

    def version_window(self) -> tuple[int, int]:
        """(oldest, newest) version number answered."""
        live = [v.number for v in live_versions(self.today or today())]
        return (
            self.min_version if self.min_version is not None else min(live),
            self.max_version if self.max_version is not None else max(live),
        )


@dataclasses.dataclass
class SandboxResponse:
    status: int
    body: bytes
    headers: dict[str, str]
    drop: bool = False  # the adapter must not deliver a response (simulated timeout)
    reset: bool = False  # ... and resets the connection instead of letting it time out
