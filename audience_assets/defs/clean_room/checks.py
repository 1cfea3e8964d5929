"""The clean room's checks: enough of the advertiser's customers matched a partner (a warning)."""

from __future__ import annotations

import dagster as dg

MATCH_RATE = "match_rate_floor"


def match_rate(rate: float, floor: float) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=MATCH_RATE,
        passed=rate >= floor,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"match_rate": rate, "min_match_rate": floor},
        description=None if rate >= floor else f"match rate {rate:.2%} is below {floor:.2%}",
    )
