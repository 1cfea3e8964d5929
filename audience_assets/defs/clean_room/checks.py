"""The clean room's checks: enough of the advertiser's customers matched a partner (a warning)."""

from __future__ import annotations

import dagster as dg

from audience_assets.core.findings import Finding
from audience_assets.defs.findings import check_result

MATCH_RATE = "match_rate_floor"


def match_rate(rate: float, floor: float) -> dg.AssetCheckResult:
    message = None if rate >= floor else f"match rate {rate:.2%} is below {floor:.2%}"
    figures = {"match_rate": rate, "min_match_rate": floor}
    return check_result(MATCH_RATE, Finding(rate >= floor, False, message, figures))
