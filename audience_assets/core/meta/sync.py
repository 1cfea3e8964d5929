"""Activation's core calls, one per asset: `plan_chunks` behind `audience_chunks` and `sync` behind
`meta_custom_audience`. Each runs the stage's rules whole (approval, the removal guard, the API version's
lifecycle, the plan, the upload, Meta's figures) and returns an outcome; the assets translate it to Dagster
(materialization, check results, metadata) and nothing else.

Both hold the audience's lock (`core.locks`: one run at a time writes an audience's plan, upload and record); a
second run waits, then fails with `LockBusy` naming the first. Anything that stops a sync on purpose, with
nothing sent, is a `SyncHeld` whose message says why and what to do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from audience_assets.core import layout
from audience_assets.core.audience.approval import (
    RemovalReview,
    approvals,
    awaiting_approval,
    plan_summary,
    review_removals,
)
from audience_assets.core.audience.plan import Plan, load_plan, store_plan
from audience_assets.core.audience.planning import PlanRefused, make_plan
from audience_assets.core.audience.value import ValueSummary
from audience_assets.core.config import Audience
from audience_assets.core.findings import Finding, Held
from audience_assets.core.meta.binding import planned_audience_id
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.delivery import (
    Delivery,
    RemovalsHeld,
    UnrecordedAudience,
    client_figures,
    deliver,
    delivery_figures,
)
from audience_assets.core.meta.errors import MetaPreflightError
from audience_assets.core.meta.uploader import UploadIncomplete
from audience_assets.core.meta.versions import Lifecycle, lifecycle, today
from audience_assets.core.store import Store

log = logging.getLogger(__name__)


class SyncHeld(Held):
    """Nothing was sent, on purpose (a refused plan, an expired API version, removals over the limit, an audience
    with no record, a failed preflight, or batches not acknowledged and dead-lettered); the message says why and
    what to do, `metadata` carries the figures."""


@dataclasses.dataclass
class ChunksOutcome:
    """An audience's plan as judged: `plan` is None when a cell must not leave (no plan is stored then)."""

    plan: Plan | None
    desired_rows: int
    keys: Sequence[str]
    cells: Finding
    removals: RemovalReview
    version: Lifecycle
    values: ValueSummary | None = None  # a value-based audience's values, as the plan sends them

    def summary(self, audience: str) -> str:
        plan = self.plan
        if plan is None:
            return f"{audience}: {self.cells.message}; no upload plan is published"
        sent = ", ".join(f"{op.kind} {op.rows}" for op in plan.operations) or "nothing to send"
        return f"{audience}: {self.desired_rows} rows wanted, {plan.confirmed_rows} confirmed on Meta; {sent}"


def cells_finding(problems: Mapping[str, int], cells: int) -> Finding:
    """Every outbound cell is a hash where Meta wants one, and no raw column holds an email or a phone (blocking)."""
    message = ("cells that must not leave: " + ", ".join(f"{k} {n}" for k, n in problems.items())) if problems else None
    figures = {"cells_checked": cells, **{f"bad_{k}": n for k, n in problems.items()}}
    return Finding(passed=not problems, blocking=True, message=message, metadata=figures)


def plan_chunks(
    store: Store, audience: str, spec: Audience, meta: MetaTarget, run: RunScope, work_dir: Path
) -> ChunksOutcome:
    """The audience as the operations its mode needs against what Meta last confirmed, in chunks, judged.
    Raises `SyncHeld` when the plan is refused (below the floor, changed keys)."""
    with store.lock(f"audience-{audience}", owner=run.run_id):
        basis = planned_audience_id(store, audience, spec, meta.ad_account_id)
        try:
            planned = make_plan(store, audience, spec, basis, work_dir)
        except PlanRefused as refused:
            raise SyncHeld(str(refused), {"min_size": spec.min_size}) from None
        plan = planned.plan
        outcome = ChunksOutcome(
            plan=plan,
            desired_rows=planned.desired,
            keys=planned.keys,
            cells=cells_finding(planned.cell_problems, sum(op.rows for op in plan.operations) * len(planned.keys)),
            removals=review_removals(audience, plan, spec.max_removal, run.tags),
            version=lifecycle(meta.api_version, today()),
            values=planned.values,
        )
        if planned.cell_problems:  # nothing may be uploaded from this plan, now or by a later run
            store.delete(layout.upload_plan(audience))
            outcome.plan = None
        else:
            outcome.plan = store_plan(store, audience, plan)
    return outcome


@dataclasses.dataclass
class SyncOutcome:
    """A sync's result: `delivery` is None when the plan waits for a person (approval: manual)."""

    plan: Plan
    review: RemovalReview
    delivery: Delivery | None = None
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)  # counts only, for metadata
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # for CloudWatch / Prometheus
    requests: int = 0  # Graph API requests the sync made (its cost)

    @property
    def awaiting_approval(self) -> bool:
        return self.delivery is None

    def summary(self, audience: str) -> str:
        if self.delivery is None:
            return (
                f"{audience}: approval is manual; the plan ({plan_summary(self.plan)}) waits until someone "
                "materializes meta_custom_audience for it. Nothing was sent."
            )
        created = "created and " if self.delivery.created else ""
        return (
            f"{audience}: audience {self.delivery.audience_id} {created}updated; Meta received "
            f"{self.figures['num_received']} rows, {self.figures['num_invalid_entries']} invalid"
        )


HELD_ERRORS = (UnrecordedAudience, RemovalsHeld, PlanRefused, MetaPreflightError)


@dataclasses.dataclass(frozen=True)
class MetaTarget:
    """Where a sync writes: the tenant's ad account, the Marketing API version it speaks, how to connect to the
    account (a client whose `MetaPolicy` decides waits and concurrency; called only once a sync will upload, so a
    held or refused sync reads no token), and fields to read back after the upload."""

    ad_account_id: str
    api_version: str
    connect: Callable[[], GraphClient] | None = None  # planning needs none; a sync does
    extra_fields: Sequence[str] = ()


@dataclasses.dataclass(frozen=True)
class RunScope:
    """The run a sync is part of: its id (the lock's owner, the audit's), its tags (approvals), where progress
    lines and warnings go, and where its metrics go."""

    run_id: str
    tags: Mapping[str, str]
    report: Callable[[str], None] = log.info
    warn: Callable[[str], None] = log.warning
    publish: Callable[[Mapping[str, float]], None] = lambda values: None


def sync(
    store: Store, audience: str, spec: Audience, meta: MetaTarget, run: RunScope, landing_prefixes: Sequence[str] = ()
) -> SyncOutcome:
    """Sync the stored plan to Meta: refuse an expired API version before any call, leave an `approval: manual`
    audience's plan waiting in an unattended run, hold removals over the limit unless the run approves them,
    then deliver (`core.meta.delivery`) under the audience's lock and gather Meta's figures. Every upload that
    fails counts in the metrics (`upload_failures`), whatever failed. Raises `SyncHeld`."""
    assert meta.connect is not None, "a sync talks to Meta: MetaTarget.connect"
    plan = load_plan(store, audience)
    if plan is None:
        raise SyncHeld(f"no upload plan for {audience!r}: materialize audience_chunks first")
    version = lifecycle(meta.api_version, today())
    if version.blocked:  # before any call: Meta would refuse it (2635) or silently upgrade it
        raise SyncHeld(version.message(), {"api_version": meta.api_version})
    manual = spec.approval == "manual"
    review = review_removals(audience, plan, spec.max_removal, run.tags)
    if awaiting_approval(audience, manual, run.tags):
        return SyncOutcome(plan, review)
    if review.blocked:
        raise SyncHeld(review.message(), review.metadata())
    if review.approved and review.over_limit:
        run.warn(review.message())
    with store.lock(f"audience-{audience}", owner=run.run_id):
        client = meta.connect()
        try:
            delivery = _deliver(store, audience, spec, plan, client, meta, run, review, manual)
        except Exception:
            _count_failure(run, client)
            raise
        finally:
            client.close()
    plan = delivery.plan or plan
    figures = delivery_figures(delivery, spec, plan.upload_id, client)
    figures["api_version"], figures["ldu_rows"] = meta.api_version, plan.ldu_rows
    figures["api_version_warning"] = client.stats.version_warning
    figures.update(review.metadata())
    metrics = _metrics(store, figures, client, landing_prefixes)
    outcome = SyncOutcome(plan, review, delivery, figures, metrics, requests=client.stats.requests)
    run.publish(outcome.metrics)
    return outcome


def _deliver(
    store: Store, audience: str, spec: Audience, plan: Plan, client: GraphClient, meta: MetaTarget, run: RunScope,
    review: RemovalReview, manual: bool,
) -> Delivery:  # fmt: skip
    """`deliver`, with what a person approved for its audit record, and the failures that send nothing on purpose
    (or dead-letter what was not acknowledged) raised as `SyncHeld`."""
    try:
        return deliver(
            store,
            audience,
            spec,
            plan,
            client,
            ad_account_id=meta.ad_account_id,
            run_id=run.run_id,
            approvals=approvals(review, manual, run.tags),
            approved_removals=review.approved,
            extra_fields=meta.extra_fields,
            report=run.report,
        )
    except HELD_ERRORS as held:
        raise SyncHeld(str(held)) from None
    except UploadIncomplete as incomplete:
        figures = {"upload_id": incomplete.upload_id, "dead_letters": incomplete.dead, **client_figures(client)}
        raise SyncHeld(str(incomplete), figures) from None


def _count_failure(run: RunScope, client: GraphClient) -> None:
    """Every failed upload counts (the failed-upload alarm watches it); a metric that cannot be published never
    hides the upload's own error."""
    try:
        run.publish({"upload_failures": 1, "throttled_requests": client.stats.throttled})
    except Exception as unpublished:
        run.warn(f"could not publish the failed upload's metrics: {unpublished}")


def _metrics(store: Store, figures: Mapping[str, Any], client: GraphClient, prefixes: Sequence[str]) -> dict:
    stats = client.stats
    return {
        "rows_uploaded": figures["rows_sent"],
        "invalid_entries": figures["num_invalid_entries"],
        "upload_failures": 0,
        "throttled_requests": stats.throttled,
        "upload_latency": round(stats.latency_seconds / stats.requests, 4) if stats.requests else 0.0,
        "freshness_lag": round(freshness_lag(store, prefixes), 1),
    }


def freshness_lag(store: Store, landing_prefixes: Sequence[str]) -> float:
    """Seconds from the newest partner delivery the audience draws on to now (the end of its upload)."""
    newest = max((o.last_modified for prefix in landing_prefixes for o in store.list(prefix)), default=None)
    return (dt.datetime.now(dt.UTC) - newest).total_seconds() if newest else 0.0
