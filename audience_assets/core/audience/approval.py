"""What needs a person's yes before it reaches Meta: large removals, and audiences declared `approval: manual`.

A mirror or replace sync removes whatever is no longer wanted, which is right for real churn and disastrous
when the data upstream was broken (a truncated export looks exactly like thousands of people leaving). So a
plan that takes away more than the audience's `max_removal` share of what Meta holds, opt-outs aside (they
always go), is held until a run approves removals for that audience by name. An audience with
`approval: manual` never uploads on its own: automation and headless runs leave its plan waiting until
someone materializes `meta_custom_audience` for it (or a run approves its upload by name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audience_assets.core.audience.plan import Plan
from audience_assets.core.findings import Finding

APPROVE_REMOVALS_TAG = "audience_assets/approve_removals"
APPROVE_UPLOAD_TAG = "audience_assets/approve_upload"
APPROVE_HOLDOUT_TAG = "audience_assets/approve_holdout"  # a changed holdout split (audience.holdout)
TRIGGER_TAG = "audience_assets/trigger"
# Dagster marks runs its automation launches with these tags (dagster/_core/storage/tags.py).
AUTOMATION_TAGS = ("dagster/from_automation_condition", "dagster/auto_materialize")


def named_in(tags: Mapping[str, str], tag: str, audience: str, upload_id: str = "") -> bool:
    """Whether the run's `tag` (comma-separated audience names, each optionally pinned to one plan as
    `audience@<upload id prefix>`) names this audience, and, when pinned, this plan."""
    for entry in (e.strip() for e in tags.get(tag, "").split(",")):
        name, _, pinned = entry.partition("@")
        if name == audience and (not pinned or (upload_id and upload_id.startswith(pinned))):
            return True
    return False


def unattended(tags: Mapping[str, str]) -> bool:
    """A run nobody launched by hand for this audience: automation, a sensor, a schedule, the headless run."""
    return (
        any(tags.get(t) == "true" for t in AUTOMATION_TAGS)
        or "dagster/sensor_name" in tags
        or "dagster/schedule_name" in tags
        or tags.get(TRIGGER_TAG) == "headless"
    )


@dataclass(frozen=True)
class RemovalReview:
    audience: str
    removing: int  # rows leaving Meta for no opt-out
    held: int  # rows Meta holds now (as last confirmed)
    max_removal: float
    approved: bool
    upload_id: str = ""

    @property
    def share(self) -> float:
        return self.removing / self.held if self.held else 0.0

    @property
    def over_limit(self) -> bool:
        return self.share > self.max_removal

    @property
    def blocked(self) -> bool:
        return self.over_limit and not self.approved

    def message(self) -> str:
        numbers = (
            f"{self.audience}: the sync would remove {self.removing:,} of the {self.held:,} rows Meta holds "
            f"({self.share:.1%}; max_removal is {self.max_removal:.0%}), opt-outs aside"
        )
        if not self.over_limit:
            return numbers + "."
        if self.approved:
            return numbers + "; approved for this run."
        pinned = f"{self.audience}@{self.upload_id[:12]}" if self.upload_id else self.audience
        return (
            numbers + ". Nothing was sent. If the upstream data is right, approve this plan for one run: "
            f"`python -m audience_assets run --approve-removals {pinned}`, or materialize meta_custom_audience "
            f"for {self.audience} with the run tag {APPROVE_REMOVALS_TAG}={pinned} (pinned to this plan: a "
            "different plan, say from a later broken delivery, is not approved by it)."
        )

    def finding(self) -> Finding:
        """Fails (blocking) when the plan removes more than max_removal of what Meta holds and no run approved it."""
        message = self.message() if self.over_limit else None
        return Finding(passed=not self.blocked, blocking=True, message=message, metadata=self.metadata())

    def metadata(self) -> dict[str, object]:
        return {
            "removal/rows": self.removing,
            "removal/held": self.held,
            "removal/share": round(self.share, 4),
            "removal/max_removal": self.max_removal,
            "removal/approved": self.approved and self.over_limit,
        }


def review_removals(audience: str, plan: Plan, max_removal: float, tags: Mapping[str, str]) -> RemovalReview:
    return RemovalReview(
        audience,
        plan.removals_to_review,
        plan.confirmed_rows,
        max_removal,
        named_in(tags, APPROVE_REMOVALS_TAG, audience, plan.upload_id),
        plan.upload_id,
    )


def awaiting_approval(audience: str, manual: bool, tags: Mapping[str, str]) -> bool:
    """An `approval: manual` audience in a run nobody started by hand for it (and that does not name it)."""
    return manual and unattended(tags) and not named_in(tags, APPROVE_UPLOAD_TAG, audience)


def plan_summary(plan: Plan) -> str:
    return ", ".join(f"{op.kind} {op.rows:,} rows" for op in plan.operations) or "nothing to send"


def approvals(review: RemovalReview, manual: bool, tags: Mapping[str, str]) -> dict[str, Any]:
    """What a person approved for this upload, for its audit record."""
    granted: dict[str, Any] = {}
    if review.approved and review.over_limit:
        granted["removals"] = {"rows": review.removing, "held": review.held, "share": round(review.share, 4)}
    if manual:
        granted["upload"] = "manual"
    if granted:
        granted["run_tags"] = {k: tags[k] for k in (APPROVE_REMOVALS_TAG, APPROVE_UPLOAD_TAG, TRIGGER_TAG) if k in tags}
    return granted
