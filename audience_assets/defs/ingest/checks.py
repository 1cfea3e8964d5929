"""Ingestion's checks, both blocking: every delivered row is accepted or quarantined with a reason, and a
delivery that looks broken (empty, sharply smaller, mostly quarantined) is not published."""

from __future__ import annotations

import dagster as dg

from audience_assets.core.findings import Finding
from audience_assets.core.ingestion.guards import Verdict
from audience_assets.core.ingestion.read import IngestReport
from audience_assets.defs.findings import check_result

ROW_ACCOUNTING = "row_accounting"
DELIVERY_GUARD = "delivery_guard"


def delivery_guard(verdict: Verdict) -> dg.AssetCheckResult:
    """Fails when the delivery was held back; passes (with the problems noted) when a run accepted it."""
    return check_result(DELIVERY_GUARD, verdict.finding())


def row_accounting(report: IngestReport) -> dg.AssetCheckResult:
    """Every file: rows read = rows accepted + rows quarantined (nothing lost, nothing invented)."""
    broken = [f.file for f in report.files if f.rows_read != f.rows_accepted + f.rows_quarantined]
    figures = {
        "rows_read": report.rows_read,
        "rows_accepted": report.rows_accepted,
        "rows_quarantined": report.rows_quarantined,
        "files_out_of_balance": len(broken),
    }
    message = f"rows do not add up in {', '.join(broken)}" if broken else None
    return check_result(ROW_ACCOUNTING, Finding(not broken, True, message, figures))
