"""Ingestion's checks, both blocking: every delivered row is accepted or quarantined with a reason, and a
delivery that looks broken (empty, sharply smaller, mostly quarantined) is not published."""

from __future__ import annotations

import dagster as dg

from audience_assets.core.ingestion.guards import Verdict
from audience_assets.core.ingestion.read import IngestReport

ROW_ACCOUNTING = "row_accounting"
DELIVERY_GUARD = "delivery_guard"


def delivery_guard(verdict: Verdict) -> dg.AssetCheckResult:
    """Fails when the delivery was held back; passes (with the problems noted) when a run accepted it."""
    return dg.AssetCheckResult(
        check_name=DELIVERY_GUARD,
        passed=not verdict.blocked,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=verdict.metadata(),
        description=verdict.message(),
    )


def row_accounting(report: IngestReport) -> dg.AssetCheckResult:
    """Every file: rows read = rows accepted + rows quarantined (nothing lost, nothing invented)."""
    broken = [f.file for f in report.files if f.rows_read != f.rows_accepted + f.rows_quarantined]
    return dg.AssetCheckResult(
        check_name=ROW_ACCOUNTING,
        passed=not broken,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_read": report.rows_read,
            "rows_accepted": report.rows_accepted,
            "rows_quarantined": report.rows_quarantined,
            "files_out_of_balance": len(broken),
        },
        description=f"rows do not add up in {', '.join(broken)}" if broken else None,
    )
