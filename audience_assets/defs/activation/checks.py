"""Activation's checks. Blocking (ERROR): the format of every outbound cell (no plan is published
otherwise), the privacy floor and the removal guard. Warnings: Meta rejecting too many entries, Meta's
count moving against the sync. Plain functions over counts, so tests can feed them crafted numbers directly."""

from __future__ import annotations

import dagster as dg

from audience_assets.core.audience.approval import RemovalReview
from audience_assets.core.audience.floor import below_floor
from audience_assets.core.config import Audience
from audience_assets.core.meta.health import Judgement
from audience_assets.core.meta.versions import Lifecycle

HASHED_CELLS = "hashed_cells"
PRIVACY_FLOOR = "privacy_floor"
INVALID_ENTRY_RATE = "invalid_entry_rate"
COUNT_DIRECTION = "count_direction"
REMOVAL_GUARD = "removal_guard"
API_VERSION = "api_version"
API_VERSION_ANSWER = "api_version_answer"
DELIVERY_STATUS = "delivery_status"
OPERATION_STATUS = "operation_status"
AUDIENCE_BINDING = "audience_binding"


def api_version(life: Lifecycle) -> dg.AssetCheckResult:
    """Warns within 90 days of the configured version's expiration (or for a version the table does not know);
    fails with ERROR once it has expired (blocking: nothing is uploaded)."""
    severity = dg.AssetCheckSeverity.ERROR if life.blocked else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=API_VERSION,
        passed=life.state == "current",
        severity=severity,
        metadata={
            "api_version": life.version,
            "state": life.state,
            "expires": f"{life.expires:%Y-%m-%d}" if life.expires else "not announced",
            "days_left": life.days_left if life.days_left is not None else -1,
        },
        description=life.message(),
    )


def version_warning(version: str, warning: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=API_VERSION_ANSWER,
        passed=not warning,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"api_version": version, "x_ad_api_version_warning": warning or "none"},
        description=(
            f"Meta upgraded the calls made with {version}: {warning}. Set META_API_VERSION to a live version."
            if warning
            else None
        ),
    )


def audience_binding(event: str, note: str, audience_id: str) -> dg.AssetCheckResult:
    """Warns when the sync did not write to the audience it wrote to before (`core.meta.binding`): the one
    bound was gone and recreated, renamed, adopted by id, found by name or moved to another account."""
    return dg.AssetCheckResult(
        check_name=AUDIENCE_BINDING,
        passed=event in ("held", "created", ""),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"event": event or "held", "audience_id": audience_id},
        description=note or None,
    )


def health(name: str, judged: Judgement) -> dg.AssetCheckResult:
    """A delivery_status or operation_status judgement (`core.meta.health`) as a check result."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=judged.healthy,
        severity=dg.AssetCheckSeverity.ERROR if judged.severity == "error" else dg.AssetCheckSeverity.WARN,
        metadata={"code": judged.code if judged.code is not None else -1, "meta_says": judged.meta_says or "-"},
        description=None if judged.healthy else judged.message(),
    )


def removal_guard(review: RemovalReview) -> dg.AssetCheckResult:
    """Fails when the plan removes more than max_removal of what Meta holds and no run approved it (the
    upload step then refuses the plan too, whoever launches it)."""
    return dg.AssetCheckResult(
        check_name=REMOVAL_GUARD,
        passed=not review.blocked,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=review.metadata(),
        description=review.message() if review.over_limit else None,
    )


def hashed_cells(problems: dict[str, int], cells: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=HASHED_CELLS,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"cells_checked": cells, **{f"bad_{k}": n for k, n in problems.items()}},
        description=("cells that must not leave: " + ", ".join(f"{k} {n}" for k, n in problems.items()))
        if problems
        else None,
    )


def privacy_floor(name: str, members: int, audience: Audience) -> dg.AssetCheckResult:
    """The audience has at least its floor of members (`core.audience.floor`). A removal list (mode remove) is
    not an audience: its floor applies to what stays on Meta, which audience_chunks enforces."""
    problem = None if audience.mode == "remove" else below_floor(name, audience.min_size, members=members)
    return dg.AssetCheckResult(
        check_name=PRIVACY_FLOOR,
        passed=problem is None,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"members": members, "min_size": audience.min_size},
        description=problem,
    )


def invalid_entry_rate(invalid: int, received: int, ceiling: float) -> dg.AssetCheckResult:
    rate = invalid / received if received else 0.0
    return dg.AssetCheckResult(
        check_name=INVALID_ENTRY_RATE,
        passed=rate <= ceiling,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"invalid_rate": rate, "max_invalid_rate": ceiling, "num_invalid_entries": invalid},
        description=None if rate <= ceiling else f"Meta rejected {rate:.2%} of the entries",
    )


def count_direction(before: int | None, after: int, net_change: int) -> dg.AssetCheckResult:
    """Meta's approximate count should move the way the sync did (-1 means Meta does not say yet)."""
    if before is None or before < 0 or after < 0 or net_change == 0:
        passed, why = True, None
    elif net_change > 0:
        passed, why = after >= before, f"added {net_change} rows but Meta's count fell from {before} to {after}"
    else:
        passed, why = after <= before, f"removed {-net_change} rows but Meta's count rose from {before} to {after}"
    return dg.AssetCheckResult(
        check_name=COUNT_DIRECTION,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "count_before": before if before is not None else -1,
            "count_after": after,
            "net_rows_sent": net_change,
        },
        description=None if passed else why,
    )
