"""Activation's checks. Blocking (ERROR): the format of every outbound cell (no plan is published
otherwise), the privacy floor and the removal guard. Warnings: Meta rejecting too many entries, Meta's
count moving against the sync. Plain functions over counts, so tests can feed them crafted numbers directly."""

from __future__ import annotations

import dagster as dg

from audience_assets.core.audience.approval import RemovalReview
from audience_assets.core.audience.floor import below_floor
from audience_assets.core.config import Audience
from audience_assets.core.findings import Finding
from audience_assets.core.meta.health import Judgement
from audience_assets.core.meta.sync import cells_finding
from audience_assets.core.meta.versions import Lifecycle
from audience_assets.defs.findings import check_result

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
    return check_result(API_VERSION, life.finding())


def version_warning(version: str, warning: str) -> dg.AssetCheckResult:
    message = f"Meta upgraded the calls made with {version}: {warning}. Set META_API_VERSION to a live version."
    figures = {"api_version": version, "x_ad_api_version_warning": warning or "none"}
    return check_result(API_VERSION_ANSWER, Finding(not warning, False, message if warning else None, figures))


def audience_binding(event: str, note: str, audience_id: str) -> dg.AssetCheckResult:
    """Warns when the sync did not write to the audience it wrote to before (`core.meta.binding`): the one
    bound was gone and recreated, renamed, adopted by id, found by name or moved to another account."""
    figures = {"event": event or "held", "audience_id": audience_id}
    return check_result(AUDIENCE_BINDING, Finding(event in ("held", "created", ""), False, note or None, figures))


def health(name: str, judged: Judgement) -> dg.AssetCheckResult:
    """A delivery_status or operation_status judgement (`core.meta.health`) as a check result."""
    return check_result(name, judged.finding())


def removal_guard(review: RemovalReview) -> dg.AssetCheckResult:
    """Fails when the plan removes more than max_removal of what Meta holds and no run approved it (the
    upload step then refuses the plan too, whoever launches it)."""
    return check_result(REMOVAL_GUARD, review.finding())


def hashed_cells(problems: dict[str, int], cells: int) -> dg.AssetCheckResult:
    return check_result(HASHED_CELLS, cells_finding(problems, cells))


def privacy_floor(name: str, members: int, audience: Audience) -> dg.AssetCheckResult:
    """The audience has at least its floor of members (`core.audience.floor`). A removal list (mode remove) is
    not an audience: its floor applies to what stays on Meta, which audience_chunks enforces."""
    problem = None if audience.mode == "remove" else below_floor(name, audience.min_size, members=members)
    figures = {"members": members, "min_size": audience.min_size}
    return check_result(PRIVACY_FLOOR, Finding(problem is None, True, problem, figures))


def invalid_entry_rate(invalid: int, received: int, ceiling: float) -> dg.AssetCheckResult:
    rate = invalid / received if received else 0.0
    message = None if rate <= ceiling else f"Meta rejected {rate:.2%} of the entries"
    figures = {"invalid_rate": rate, "max_invalid_rate": ceiling, "num_invalid_entries": invalid}
    return check_result(INVALID_ENTRY_RATE, Finding(rate <= ceiling, False, message, figures))


def count_direction(before: int | None, after: int, net_change: int) -> dg.AssetCheckResult:
    """Meta's approximate count should move the way the sync did (-1 means Meta does not say yet)."""
    if before is None or before < 0 or after < 0 or net_change == 0:
        passed, why = True, None
    elif net_change > 0:
        passed, why = after >= before, f"added {net_change} rows but Meta's count fell from {before} to {after}"
    else:
        passed, why = after <= before, f"removed {-net_change} rows but Meta's count rose from {before} to {after}"
    figures = {"count_before": before if before is not None else -1, "count_after": after, "net_rows_sent": net_change}
    return check_result(COUNT_DIRECTION, Finding(passed, False, None if passed else why, figures))
