"""What `python -m audience_assets plan` prints per audience: the stored upload plan read as a person reviews
it (adds, removes, unchanged, requests, time at the rate past uploads achieved, the holdout's arms, the values a
value-based audience sends, its lookalikes, what would hold it back).

Everything comes from the store (the plan document and the audit records of earlier uploads); nothing here
talks to Meta.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audience_assets.core import layout
from audience_assets.core.audience.approval import review_removals
from audience_assets.core.audience.holdout import describe_spec, spec
from audience_assets.core.audience.plan import Plan
from audience_assets.core.config import Audience
from audience_assets.core.store import Store


@dataclass(frozen=True)
class UploadRate:
    """Seconds per request, learned from the audit records of past uploads."""

    seconds: float
    batches: int

    @property
    def per_request(self) -> float | None:
        return self.seconds / self.batches if self.batches else None


def learned_rate(store: Store, limit: int = 200) -> UploadRate:
    """Sum of upload seconds and batches over the most recent audit records (any audience)."""
    records = sorted((o for o in store.list("audit/") if o.key.endswith(".json")), key=lambda o: o.key)[-limit:]
    seconds, batches = 0.0, 0
    for obj in records:
        raw = store.get_bytes(obj.key)
        record = json.loads(raw) if raw else {}
        if record.get("batches_sent") and record.get("upload_seconds") is not None:
            seconds += float(record["upload_seconds"])
            batches += int(record["batches_sent"])
    return UploadRate(seconds, batches)


def holdout_lines(
    name: str, audience: Audience, published: Mapping[str, object] | None, figures: Mapping[str, object]
) -> list[str]:
    """The split as the last selection published it (`published`, with its `figures`), or, when the configuration
    changed it since, that the selection waits for the change's approval."""
    wanted = spec(audience)
    if wanted is None and published is None:
        return []
    if wanted != published:
        return [
            f"  holdout: the configuration changes it from {describe_spec(published)} to {describe_spec(wanted)}; "
            f"the selection waits for `run --approve-holdout {name}` (nothing moves before)"
        ]
    if "z" not in figures:  # the selection's figures are not at hand
        return [f"  holdout: {describe_spec(wanted)}"]
    return [
        f"  holdout {describe_spec(wanted)}: treatment {int(figures['treatment']):,} (in the plan), control "
        f"{int(figures['control']):,} (kept in audience_holdout; share {float(figures['control_share']):.1%}, "
        f"{float(figures['z']):+.1f} sd from expected)"
    ]


def value_lines(audience: Audience, figures: Mapping[str, object]) -> list[str]:
    """A value-based audience's values as the plan sends them (`figures`: the chunks' metadata)."""
    if audience.value is None:
        return []
    if "value_rows" not in figures:
        return [f"  values from {audience.value.column} (LOOKALIKE_VALUE): not at hand"]
    return [
        f"  values from {audience.value.column} (LOOKALIKE_VALUE) on {int(figures['value_rows']):,} rows: median "
        f"{float(figures['value_median']):,.2f}, p90 {float(figures['value_p90']):,.2f}, max "
        f"{float(figures['value_max']):,.2f}; {int(figures['members_without_value']):,} members without a value "
        "are left out"
    ]


def lookalike_lines(store: Store, name: str, audience: Audience) -> list[str]:
    """Each declared lookalike: the one on record, or that it is made after the seed's next sync."""
    lines = []
    for lookalike in audience.lookalikes:
        band = f"{lookalike.starting_ratio:.0%}-" if lookalike.starting_ratio else "top "
        what = f"  lookalike {lookalike.key} ({band}{lookalike.ratio:.0%} of {lookalike.country})"
        raw = store.get_bytes(layout.lookalike(name, lookalike.key))
        if raw is None:
            lines.append(f"{what}: would be created after the sync, once the seed holds 100 people or more")
            continue
        record = json.loads(raw)
        lines.append(
            f"{what}: Meta lookalike {record['lookalike_id']}, made from seed {record['seed_audience_id']} "
            f"({int(record['seed_rows']):,} rows, recorded {record['recorded_at']})"
        )
    return lines


def describe(
    name: str,
    audience: Audience,
    plan: Plan | None,
    rate: UploadRate,
    cell_problems: Mapping[str, int],
    holdout: tuple[Mapping[str, object] | None, Mapping[str, object]] | None = None,
    more: Sequence[str] = (),
) -> list[str]:
    """The lines printed for one audience; `holdout`: the split its members were last published with, and that
    selection's figures; `more`: further lines (values, lookalikes) before the guards."""
    if plan is None:
        return [f"{name}: no upload plan (audience_chunks did not publish one; see its checks)"]
    adds, removes, replaces = plan.rows("add"), plan.rows("remove"), plan.rows("replace")
    requests = sum(len(op.chunks) for op in plan.operations)
    unchanged = plan.desired_rows - adds if audience.mode in ("mirror", "add") else None
    review = review_removals(name, plan, audience.max_removal, {})
    per_request = rate.per_request
    estimate = (
        f"about {requests * per_request:,.0f} s at {per_request:.2f} s per request (learned from {rate.batches:,})"
        if per_request is not None
        else "unknown until a first upload (no audit record yet)"
    )
    lines = [
        f"{name} ({audience.mode}, {audience.meta_name}):",
        f"  Meta holds {plan.confirmed_rows:,} rows (as last confirmed); wanted {plan.desired_rows:,}",
        f"  add {adds:,}"
        + (f" ({plan.resent_rows:,} of them updates of rows Meta holds)" if plan.resent_rows else "")
        + f", remove {removes:,}"
        + (f", replace with {replaces:,}" if replaces else "")
        + (f", unchanged {unchanged:,}" if unchanged is not None else ""),
        "  rows Meta would reject by local validation: "
        + (", ".join(f"{k} {n:,}" for k, n in cell_problems.items()) if cell_problems else "0"),
        f"  requests {requests:,}; time {estimate}",
    ]
    if holdout is not None:
        lines += holdout_lines(name, audience, *holdout)
    lines += more
    if review.blocked:
        lines.append(f"  BLOCKED by the removal guard: {review.message()}")
    elif audience.approval == "manual":
        lines.append("  waits for approval (approval: manual): materialize meta_custom_audience for it to send")
    else:
        lines.append("  guards: none would block")
    return lines
