"""An audience's health as Meta reports it after a sync, judged: what each `delivery_status` and
`operation_status` code means for the advertiser and what to do, in Meta's own words plus ours.

Codes and meanings from the Custom Audience reference (`delivery_status`: 200 usable, 300 too small or
inactive, 400 and above unusable; `operation_status`: 200 normal, 100 expiring, 411 low match rate, 412 many
invalid entries, 441 still populating, 450 stale (no update for a long time), 470 the creating ad account is
inactive, 471 flagged). Severity: "error" where the audience cannot deliver ads, "warn" where it can but
should be looked at, None when healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audience_assets.core.findings import Finding


@dataclass(frozen=True)
class Judgement:
    code: int | None
    meta_says: str  # Meta's description, verbatim
    severity: str | None  # None (healthy), "warn" or "error"
    advice: str

    @property
    def healthy(self) -> bool:
        return self.severity is None

    def message(self) -> str:
        said = f' (Meta: "{self.meta_says}")' if self.meta_says else ""
        return f"{self.advice}{said}" if self.advice else f"code {self.code}{said}"

    def finding(self) -> Finding:
        return Finding(
            passed=self.healthy,
            blocking=self.severity == "error",
            message=None if self.healthy else self.message(),
            metadata={"code": self.code if self.code is not None else -1, "meta_says": self.meta_says or "-"},
        )


OPERATION_ADVICE = {
    100: (
        "warn",
        "expiring: Meta deletes customer-list audiences unused in active ad sets for two years; use it "
        "in an active ad set to keep it",
    ),
    411: (
        "warn",
        "low match rate: few uploaded rows matched Meta accounts; send more identifiers per person "
        "(email and phone, name with zip and country) in audiences.yaml `keys`",
    ),
    412: (
        "warn",
        "many invalid entries: Meta could not use many rows; check the first-party export's identifier "
        "columns and the ingestion quarantine for the reasons",
    ),
    441: (
        "warn",
        "still populating: Meta has not finished matching the upload; sizes are not final yet (the "
        "next sync reads it again)",
    ),
    450: ("warn", "stale: the audience has not been updated for a long time; check that its syncs run"),
    470: (
        "error",
        "the ad account that created it is inactive: the audience cannot be used until the account "
        "is reactivated in Meta Business Settings",
    ),
    471: (
        "error",
        "flagged by Meta's integrity review: its name or description suggests restricted "
        "information; rename it and resolve the restriction in Ads Manager",
    ),
}


def operation_health(status: dict[str, Any] | None) -> Judgement:
    status = status or {}
    code, said = status.get("code"), str(status.get("description") or "")
    if code in (None, 200):
        return Judgement(code, said, None, "")
    severity, advice = OPERATION_ADVICE.get(code, ("warn", f"Meta reports operation_status {code}"))
    return Judgement(code, said, severity, advice)


def delivery_health(status: dict[str, Any] | None, *, rows_held: int, approximate_count: int) -> Judgement:
    """200 usable; 300 too small or inactive, explained with the audience's own numbers; 400+ unusable."""
    status = status or {}
    code, said = status.get("code"), str(status.get("description") or "")
    if code in (None, 200):
        return Judgement(code, said, None, "")
    if code == 300:
        size = f"about {approximate_count:,} people" if approximate_count >= 0 else "fewer than 1,000 people"
        return Judgement(
            code,
            said,
            "warn",
            f"too small or inactive to deliver: Meta holds {rows_held:,} rows of this audience and matched {size}; "
            "widen its selection or add identifiers so that more people match, or use it in an active ad set",
        )
    if code >= 400:
        return Judgement(code, said, "error", f"unusable for delivery (delivery_status {code}); see Meta's words")
    return Judgement(code, said, "warn", f"Meta reports delivery_status {code}")
