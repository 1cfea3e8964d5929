"""The one converter from a core `Finding` to a Dagster asset check result: blocking findings are ERROR checks
(a failed one stops downstream), the others WARN."""

from __future__ import annotations

import dagster as dg

from audience_assets.core.findings import Finding


def check_result(check_name: str, finding: Finding) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=finding.passed,
        severity=dg.AssetCheckSeverity.ERROR if finding.blocking else dg.AssetCheckSeverity.WARN,
        metadata=dict(finding.metadata),
        description=finding.message or None,
    )
