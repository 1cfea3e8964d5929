"""Activation: audience members, the hashed chunks Meta receives, and the Meta custom audience itself.

All are partitioned by audience (audiences.yaml). One step selects `audience_members` and records the arms of
the audience's holdout as `audience_holdout` (`core.audience.holdout`); `audience_members` refuses, through a
blocking check, to let an audience below its privacy floor flow on; `audience_chunks` writes the delta against
what Meta last confirmed as chunks of at most 10,000 rows; `meta_custom_audience` creates the audience
if missing and uploads the chunks, resuming from the upload ledger after a crash.
"""

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.audience.holdout import hold_unapproved_change, record_spec
from audience_assets.core.audience.plan import Plan
from audience_assets.core.audience.selection import select_members
from audience_assets.core.audience.value import ValueSummary
from audience_assets.core.config import ProjectConfig
from audience_assets.core.duck import connect
from audience_assets.core.findings import Held
from audience_assets.core.locks import LockBusy
from audience_assets.core.meta.sync import ChunksOutcome, MetaTarget, RunScope, plan_chunks
from audience_assets.core.store import optional_copy
from audience_assets.defs.activation import checks
from audience_assets.defs.findings import check_result
from audience_assets.defs.metadata import begin_tenant_step, check_spec, publish, work_dir
from audience_assets.defs.partitions import partner_to_audiences
from audience_assets.defs.resources import MetaAudiences, Storage

GROUP = "activation"


@dataclasses.dataclass(frozen=True)
class Shape:
    """What the three assets of one tenant share: partitions, key prefix, tags, kinds."""

    config: ProjectConfig
    tenant: str
    partitions: dg.PartitionsDefinition
    prefix: list[str]
    storage_kind: str

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([*self.prefix, name])

    def options(self, kinds: set[str], **more: Any) -> dict[str, Any]:
        return {
            "group_name": GROUP,
            "kinds": kinds,
            "partitions_def": self.partitions,
            "key_prefix": self.prefix,
            "tags": {"tenant": self.tenant},
            **more,
        }


def selection_specs(shape: Shape) -> list[dg.AssetSpec]:
    """`audience_members` (who goes to Meta) and `audience_holdout` (both arms of the audience's holdout)."""
    common = {
        "group_name": GROUP,
        "kinds": {"duckdb", shape.storage_kind},
        "partitions_def": shape.partitions,
        "tags": {"tenant": shape.tenant},
        # new matches flow on by themselves; each audience's own refresh_cron is a schedule (`schedules`)
        "automation_condition": dg.AutomationCondition.eager(),
        "deps": [
            dg.AssetDep("clean_room_matches", partition_mapping=partner_to_audiences(shape.config, shape.tenant)),
            "first_party_customers",
            "suppression_list",
        ],
    }
    return [
        dg.AssetSpec(
            shape.key("audience_members"),
            description="The audience's customers: anyone a selected partner segment matched, deduplicated, minus "
            "everyone on the opt-out list, minus its holdout's control arm.",
            **common,
        ),
        dg.AssetSpec(
            shape.key("audience_holdout"),
            description="Both arms of the audience's holdout (customer id and arm), for lift measurement: kept in "
            "the advertiser's storage, never sent anywhere. Without a holdout, every member is treatment.",
            **common,
        ),
    ]


def members_asset(shape: Shape) -> dg.AssetsDefinition:
    """One step writes both selection assets: the holdout's split decides the members."""

    @dg.multi_asset(
        name="_".join([*shape.prefix, "audience_selection"]),
        partitions_def=shape.partitions,
        can_subset=False,
        specs=selection_specs(shape),
        check_specs=[
            check_spec(
                checks.PRIVACY_FLOOR,
                shape.key("audience_members"),
                "The audience has at least its min_size members (never below 100); below it nothing flows on to Meta.",
                blocking=True,
                partitions_def=shape.partitions,
            )
        ],
    )
    def audience_selection(context: dg.AssetExecutionContext, storage: Storage) -> Iterator[dg.MaterializeResult]:
        yield from select_audience(context, storage, shape)

    return audience_selection


def select_audience(
    context: dg.AssetExecutionContext, storage: Storage, shape: Shape
) -> Iterator[dg.MaterializeResult]:
    """Members (and a holdout's arms) of the partition's audience, unless its holdout changed unapproved."""
    name = context.partition_key
    audience = shape.config.audiences[name]
    step = begin_tenant_step(context, storage, tenant=shape.tenant, audience=name)
    store = step.store
    with held_as_failure():
        approved_change = hold_unapproved_change(store, name, audience, context.run.tags)
    if approved_change:
        context.log.warning(approved_change)
    with work_dir() as tmp, connect(tmp) as con, contextlib.ExitStack() as stack:
        matches = {p: stack.enter_context(store.local_copy(layout.matches(p))) for p in audience.select}
        customers = stack.enter_context(store.local_copy(layout.FIRST_PARTY_CUSTOMERS))
        suppression = stack.enter_context(optional_copy(store, layout.SUPPRESSION_LIST))
        out, arms_out = tmp / "members.parquet", tmp / "holdout.parquet"
        counts = select_members(
            con,
            audience=audience,
            matches=matches,
            customers=customers,
            suppression=suppression,
            out=out,
            arms_out=arms_out,
        )
        arms_metadata = publish(con, store, arms_out, layout.holdout_arms(name))
        record_spec(store, name, audience)  # before the members: a crash in between never asks twice
        metadata = publish(con, store, out, layout.audience_members(name))
    split = f", {counts.arms.control} held out as control" if audience.holdout else ""
    context.log.info(
        f"{name}: {counts.qualified} qualified, {counts.suppressed} suppressed{split}, {counts.members} members"
    )
    figures = counts.arms.metadata()
    yield step.result(
        asset_key=shape.key("audience_members"),
        metadata={
            **metadata,
            "qualified": counts.qualified,
            "suppressed": counts.suppressed,
            "members": counts.members,
            "min_size": audience.min_size,
            "partners": ", ".join(sorted(audience.select)),
            **figures,
        },
        rows=counts.qualified,
        check_results=[checks.privacy_floor(name, counts.members, audience)],
    )
    yield dg.MaterializeResult(
        asset_key=shape.key("audience_holdout"), metadata={**arms_metadata, **figures}, tags=step.tags
    )


@contextlib.contextmanager
def held_as_failure() -> Iterator[None]:
    """A selection, plan or sync stopped on purpose (`Held`) or by another run's lock on the audience (`LockBusy`,
    naming that run) fails the step with the message and figures, not as a crash."""
    try:
        yield
    except Held as held:
        raise dg.Failure(str(held), metadata=held.metadata) from None
    except LockBusy as busy:
        raise dg.Failure(str(busy)) from None


CHUNK_CHECKS = {
    checks.HASHED_CELLS: "Every outbound cell is 64 lowercase hex or empty where Meta wants a hash, and no raw column "
    "holds an email address or a phone number; otherwise no upload plan is published.",
    checks.API_VERSION: "The Marketing API version the upload will speak (META_API_VERSION) is not within 90 days of "
    "its expiration (a warning) and has not expired (then nothing is uploaded).",
    checks.REMOVAL_GUARD: "A mirror/replace plan removes at most the audience's max_removal share of what Meta holds "
    "(opt-outs aside), unless a run approves it; meta_custom_audience holds such a plan.",
}


def chunks_asset(shape: Shape) -> dg.AssetsDefinition:
    config, tenant = shape.config, shape.tenant

    @dg.asset(
        **shape.options({"duckdb", shape.storage_kind}),
        automation_condition=dg.AutomationCondition.eager(),
        deps=[shape.key("audience_members"), "first_party_customers", "suppression_list"],
        check_specs=[
            check_spec(name, shape.key("audience_chunks"), text, blocking=True, partitions_def=shape.partitions)
            for name, text in CHUNK_CHECKS.items()
        ],
    )
    def audience_chunks(
        context: dg.AssetExecutionContext, storage: Storage, meta: MetaAudiences
    ) -> dg.MaterializeResult:
        """The audience as Meta multi-key rows (each attribute normalized and SHA-256 hashed per Meta's
        rules), as the operations its sync mode needs against what Meta last confirmed, in chunks of at
        most 10,000 rows."""
        name = context.partition_key
        audience = config.audiences[name]
        step = begin_tenant_step(context, storage, tenant=tenant, audience=name)
        target = MetaTarget(meta.ad_account(config.tenant(tenant)), meta.api_version)
        with work_dir() as tmp, held_as_failure():
            outcome = plan_chunks(
                step.store, name, audience, target, RunScope(context.run.run_id, context.run.tags), tmp
            )
        check_results = [
            check_result(checks.HASHED_CELLS, outcome.cells),
            checks.removal_guard(outcome.removals),
            checks.api_version(outcome.version),
        ]
        if outcome.plan is None:  # a cell that must not leave: no plan is published
            return step.result(
                metadata={"dagster/row_count": 0}, rows=outcome.desired_rows, check_results=check_results
            )
        if outcome.removals.blocked:
            context.log.warning(outcome.removals.message())
        context.log.info(outcome.summary(name))
        metadata = chunks_metadata(outcome, outcome.plan, audience.mode, step.store.uri(layout.upload_plan(name)))
        return step.result(rows=outcome.desired_rows, metadata=metadata, check_results=check_results)

    return audience_chunks


def chunks_metadata(outcome: ChunksOutcome, plan: Plan, mode: str, uri: str) -> dict[str, Any]:
    sizes = [c.rows for op in plan.operations for c in op.chunks]
    return {
        "dagster/row_count": sum(sizes),
        "dagster/uri": uri,
        "upload_id": plan.upload_id,
        "mode": mode,
        "desired_rows": outcome.desired_rows,
        "confirmed_rows": plan.confirmed_rows,
        "chunk_count": len(sizes),
        "largest_chunk_rows": max(sizes, default=0),
        **{f"{op.kind}_rows": op.rows for op in plan.operations},
        "schema": ", ".join(outcome.keys),
        **outcome.removals.metadata(),
        "ldu_rows": plan.ldu_rows,
        "basis_audience_id": plan.basis_audience_id or "none",
        **(value_metadata(outcome.values) if outcome.values else {}),
    }


def value_metadata(values: ValueSummary) -> dict[str, Any]:
    """A value-based audience's values: figures Dagster plots across materializations, the distribution a table."""
    figures = values.metadata()
    return {**figures, "value_distribution": dg.MetadataValue.md(figures["value_distribution"])}
