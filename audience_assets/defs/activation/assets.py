"""Activation: audience members, the hashed chunks Meta receives, and the Meta custom audience itself.

All three are partitioned by audience (audiences.yaml). `audience_members` refuses, through a blocking
check, to let an audience below its privacy floor flow on; `audience_chunks` writes the delta against
what Meta last confirmed as chunks of at most 10,000 rows; `meta_custom_audience` creates the audience
if missing and uploads the chunks, resuming from the upload ledger after a crash.
"""

import contextlib
import dataclasses
import datetime as dt
from typing import Any

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.audience.delivery import Delivery, deliver
from audience_assets.core.audience.floor import below_floor, members_after
from audience_assets.core.audience.outbound import outbound_cell_problems
from audience_assets.core.audience.plan import build_rows, load_plan, plan_upload, store_plan
from audience_assets.core.audience.selection import select_members
from audience_assets.core.config import Audience, ProjectConfig
from audience_assets.core.duck import connect
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.ledger import UploadLedger
from audience_assets.core.meta.uploader import UploadIncomplete
from audience_assets.core.store import Store, optional_copy
from audience_assets.defs.activation import checks
from audience_assets.defs.metadata import attribute, check_spec, history_table, parquet_count, publish, work_dir
from audience_assets.defs.partitions import audience_partitions, partner_to_audiences
from audience_assets.defs.resources import MetaAudiences, Metrics, Storage

GROUP = "activation"
META_POOL = "meta_api"


def freshness_lag(store: Store, landing_prefixes: list[str]) -> float:
    """Seconds from the newest partner delivery the audience draws on to now (the end of its upload)."""
    newest = max((o.last_modified for prefix in landing_prefixes for o in store.list(prefix)), default=None)
    return (dt.datetime.now(dt.UTC) - newest).total_seconds() if newest else 0.0


def meta_pool(config: ProjectConfig, tenant: str) -> str:
    """The concurrency pool of a tenant's uploads: one per ad account, so one account's throttling or
    failure never holds another's slots. The implicit tenant keeps the plain `meta_api` pool."""
    declared = config.tenant(tenant)
    return f"{META_POOL}:{declared.meta_ad_account_id}" if declared else META_POOL


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


def build_activation_assets(config: ProjectConfig, storage_kind: str, tenant: str) -> list[dg.AssetsDefinition]:
    """The activation assets of one tenant: under the tenant's key prefix once tenants are declared. A tenant
    being onboarded may have no audiences yet: its partners' data is ingested and matched, nothing activated."""
    if not config.audiences_of(tenant):
        return []
    shape = Shape(
        config, tenant, audience_partitions(config, tenant), [tenant] if config.multi_tenant else [], storage_kind
    )
    return [members_asset(shape), chunks_asset(shape), meta_audience_asset(shape)]


def members_asset(shape: Shape) -> dg.AssetsDefinition:
    config, tenant = shape.config, shape.tenant
    audiences = [config.audiences[a] for a in config.audiences_of(tenant)]
    # New matches flow on by themselves; every audience is also refreshed daily (first audience's cron).
    cron = sorted({a.refresh_cron for a in audiences})[0]
    refresh = dg.AutomationCondition.eager() | dg.AutomationCondition.on_cron(cron, cron_timezone="UTC")

    @dg.asset(
        **shape.options({"duckdb", shape.storage_kind}),
        automation_condition=refresh,
        deps=[
            dg.AssetDep("clean_room_matches", partition_mapping=partner_to_audiences(config, tenant)),
            "first_party_customers",
            "suppression_list",
        ],
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
    def audience_members(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """The audience's customers: anyone a selected partner segment matched, deduplicated, minus everyone
        on the opt-out list."""
        name = context.partition_key
        audience = config.audiences[name]
        meter = attribute(context, storage, tenant=tenant, audience=name)
        store = meter.store
        with work_dir() as tmp, connect(tmp) as con, contextlib.ExitStack() as stack:
            matches = {p: stack.enter_context(store.local_copy(layout.matches(p))) for p in audience.select}
            customers = stack.enter_context(store.local_copy(layout.FIRST_PARTY_CUSTOMERS))
            suppression = stack.enter_context(optional_copy(store, layout.SUPPRESSION_LIST))
            out = tmp / "members.parquet"
            counts = select_members(
                con, audience=audience, matches=matches, customers=customers, suppression=suppression, out=out
            )
            metadata = publish(con, store, out, layout.audience_members(name))
        context.log.info(
            f"{name}: {counts.qualified} qualified, {counts.suppressed} suppressed, {counts.members} members"
        )
        return meter.result(
            metadata={
                **metadata,
                "qualified": counts.qualified,
                "suppressed": counts.suppressed,
                "members": counts.members,
                "min_size": audience.min_size,
                "partners": ", ".join(sorted(audience.select)),
            },
            rows=counts.qualified,
            check_results=[checks.privacy_floor(name, counts.members, audience)],
        )

    return audience_members


def chunks_asset(shape: Shape) -> dg.AssetsDefinition:
    config, tenant = shape.config, shape.tenant

    @dg.asset(
        **shape.options({"duckdb", shape.storage_kind}),
        automation_condition=dg.AutomationCondition.eager(),
        deps=[shape.key("audience_members"), "first_party_customers", "suppression_list"],
        check_specs=[
            check_spec(
                checks.HASHED_CELLS,
                shape.key("audience_chunks"),
                "Every outbound cell is 64 "
                "lowercase hex or empty where Meta wants a hash, and no raw column holds an email "
                "address or a phone number; otherwise no upload plan is published.",
                blocking=True,
                partitions_def=shape.partitions,
            )
        ],
    )
    def audience_chunks(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """The audience as Meta multi-key rows (each attribute normalized and SHA-256 hashed per Meta's
        rules), as the operations its sync mode needs against what Meta last confirmed, in chunks of at
        most 10,000 rows."""
        name = context.partition_key
        audience = config.audiences[name]
        meter = attribute(context, storage, tenant=tenant, audience=name)
        store = meter.store
        keys = audience.keys
        with work_dir() as tmp, connect(tmp) as con, contextlib.ExitStack() as stack:
            members = stack.enter_context(store.local_copy(layout.audience_members(name)))
            if audience.mode != "remove":
                refuse(below_floor(name, audience.min_size, members=parquet_count(con, members)), audience)
            customers = stack.enter_context(store.local_copy(layout.FIRST_PARTY_CUSTOMERS))
            suppression = stack.enter_context(optional_copy(store, layout.SUPPRESSION_LIST))
            confirmed = stack.enter_context(optional_copy(store, layout.confirmed(name)))
            rows = tmp / "rows.parquet"
            desired = build_rows(con, members=members, customers=customers, keys=keys, out=rows)
            plan = plan_upload(
                con,
                audience=name,
                mode=audience.mode,
                keys=keys,
                desired=rows,
                confirmed=confirmed,
                suppression=suppression,
                out_dir=tmp / "chunks",
                chunk_rows=audience.chunk_rows,
            )
            refuse(below_floor(name, audience.min_size, after=members_after(plan)), audience)
            chunk_files = [c.path for op in plan.operations for c in op.chunks]
            problems = outbound_cell_problems(con, chunk_files, keys)
            cell_check = checks.hashed_cells(problems, sum(op.rows for op in plan.operations) * len(keys))
            if problems:  # nothing may be uploaded from this plan, now or by a later run
                store.delete(layout.upload_plan(name))
                return meter.result(metadata={"dagster/row_count": 0}, rows=desired, check_results=[cell_check])
            plan = store_plan(store, name, plan)
        sizes = [c.rows for op in plan.operations for c in op.chunks]
        context.log.info(
            f"{name}: {desired} rows wanted, {plan.confirmed_rows} confirmed on Meta; "
            + (", ".join(f"{op.kind} {op.rows}" for op in plan.operations) or "nothing to send")
        )
        return meter.result(
            rows=desired,
            metadata={
                "dagster/row_count": sum(sizes),
                "dagster/uri": store.uri(layout.upload_plan(name)),
                "upload_id": plan.upload_id,
                "mode": audience.mode,
                "desired_rows": desired,
                "confirmed_rows": plan.confirmed_rows,
                "chunk_count": len(sizes),
                "largest_chunk_rows": max(sizes, default=0),
                **{f"{op.kind}_rows": op.rows for op in plan.operations},
                "schema": ", ".join(keys),
            },
            check_results=[cell_check],
        )

    return audience_chunks


def refuse(problem: str | None, audience: Audience) -> None:
    """Stop the step when the privacy floor says no (nothing is uploaded)."""
    if problem:
        raise dg.Failure(problem, metadata={"min_size": audience.min_size})


def meta_audience_asset(shape: Shape) -> dg.AssetsDefinition:
    config, tenant = shape.config, shape.tenant
    stale_after = dt.timedelta(hours=min(config.audiences[a].freshness_hours for a in config.audiences_of(tenant)))
    key = shape.key("meta_custom_audience")

    @dg.asset(
        **shape.options({"meta"}),
        deps=[shape.key("audience_chunks")],
        pool=meta_pool(config, tenant),
        automation_condition=dg.AutomationCondition.eager(),
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=stale_after),
        check_specs=[
            check_spec(
                checks.INVALID_ENTRY_RATE,
                key,
                "Meta rejected at most the audience's max_invalid_rate of the entries sent.",
                partitions_def=shape.partitions,
            ),
            check_spec(
                checks.COUNT_DIRECTION,
                key,
                "Meta's approximate count moved the way the sync did (up after adds, down after removals).",
                partitions_def=shape.partitions,
            ),
        ],
    )
    def meta_custom_audience(
        context: dg.AssetExecutionContext, storage: Storage, meta: MetaAudiences, metrics: Metrics
    ) -> dg.MaterializeResult:
        """The Meta custom audience: created if missing, preflighted, then updated with the chunks through
        upload sessions; a crashed upload resumes from the ledger without sending anything twice."""
        name = context.partition_key
        audience = config.audiences[name]
        meter = attribute(context, storage, tenant=tenant, audience=name)
        store = meter.store
        plan = load_plan(store, name)
        if plan is None:
            raise dg.Failure(f"no upload plan for {name!r}: materialize audience_chunks first")
        client = meta.client(config.tenant(tenant))
        try:
            delivery = deliver(
                store,
                name,
                audience,
                plan,
                client,
                ad_account_id=meta.ad_account(config.tenant(tenant)),
                concurrency=meta.upload_concurrency,
                run_id=context.run.run_id,
                extra_fields=["sandbox_member_count"] if meta.sandbox_state else [],
                report=context.log.info,
                settle_seconds=meta.settle_seconds,
            )
        except Exception as error:  # every failed upload counts (the failed-upload alarm watches it), whatever failed
            try:
                metrics.publish(
                    {"upload_failures": 1, "throttled_requests": client.stats.throttled}, tenant=tenant, audience=name
                )
            except Exception as unpublished:  # never hide the upload's own error behind the metric's
                context.log.warning(f"could not publish the failed upload's metrics: {unpublished}")
            if not isinstance(error, UploadIncomplete):
                raise
            dead = len(UploadLedger(store, name, plan.upload_id).dead_letters())
            raise dg.Failure(
                str(error), metadata={"upload_id": plan.upload_id, "dead_letters": dead, **client_figures(client)}
            ) from None
        finally:
            client.close()
        metadata = delivery_metadata(delivery, audience, plan.upload_id, client)
        before = previous_count(context, name)
        received, invalid = metadata["num_received"], metadata["num_invalid_entries"]
        metadata["audience_size_history"] = history_table(
            context, metadata, ("approximate_count_lower_bound", "rows_sent", "num_invalid_entries")
        )
        context.log.info(
            f"{name}: audience {delivery.audience_id} {'created and ' if delivery.created else ''}updated; "
            f"Meta received {received} rows, {invalid} invalid"
        )
        metrics.publish(
            {
                "rows_uploaded": metadata["rows_sent"],
                "invalid_entries": invalid,
                "upload_failures": 0,
                "throttled_requests": client.stats.throttled,
                "upload_latency": round(client.stats.latency_seconds / client.stats.requests, 4)
                if client.stats.requests
                else 0.0,
                "freshness_lag": round(
                    freshness_lag(store, [config.sources.partner_prefix(p) for p in audience.select]), 1
                ),
            },
            tenant=tenant,
            audience=name,
        )
        rows = {op.kind: op.rows for op in delivery.result.operations}
        return meter.result(
            metadata=metadata,
            rows=metadata["rows_sent"],
            meta_requests=client.stats.requests,
            check_results=[
                checks.invalid_entry_rate(invalid, received, audience.max_invalid_rate),
                checks.count_direction(
                    before, int(metadata["approximate_count_lower_bound"]), rows.get("add", 0) - rows.get("remove", 0)
                ),
            ],
        )

    return meta_custom_audience


def client_figures(client: GraphClient) -> dict[str, Any]:
    """What the upload cost in calls and waiting (for metadata; no payloads)."""
    return {
        "api_requests": client.stats.requests,
        "api_retries": client.stats.retries,
        "throttled_responses": client.stats.throttled,
        "seconds_waiting": round(client.pacer.waited, 1),
        "longest_wait_seconds": round(client.pacer.longest_wait, 1),
    }


def delivery_metadata(delivery: Delivery, audience: Audience, upload_id: str, client: GraphClient) -> dict[str, Any]:
    """An upload's figures as Meta reported them, counts only (never rows or samples)."""
    result, state = delivery.result, delivery.state
    operations = result.operations
    received = sum(op.num_received for op in operations)
    invalid = sum(op.num_invalid_entries for op in operations)
    metadata: dict[str, Any] = {
        "audience_id": delivery.audience_id,
        "created": delivery.created,
        "upload_id": upload_id,
        "mode": audience.mode,
        "rows_sent": sum(op.rows for op in operations),
        **{f"{op.kind}_rows": op.rows for op in operations},
        "num_received": received,
        "num_invalid_entries": invalid,
        "invalid_entry_samples": sum(op.invalid_entry_samples for op in operations),  # a count only
        "session_ids": ", ".join(str(s) for op in operations for s in op.session_ids),
        "batches_planned": result.batches_planned,
        "batches_sent": sum(op.batches_sent for op in operations),
        "batches_resumed": sum(op.batches_resumed for op in operations),
        "sessions": len({s for op in operations for s in op.session_ids}),
        "sessions_left_open": len(result.open_sessions),
        "approximate_count_lower_bound": state.get("approximate_count_lower_bound", -1),
        "approximate_count_upper_bound": state.get("approximate_count_upper_bound", -1),
        "operation_status": (state.get("operation_status") or {}).get("description", ""),
        **client_figures(client),
    }
    if "sandbox_member_count" in state:
        metadata["sandbox_member_count"] = metadata["dagster/row_count"] = state["sandbox_member_count"]
    sent = ", ".join(f"{op.kind} {op.rows:,} rows" for op in operations) or "nothing to send"
    metadata["summary"] = dg.MetadataValue.md(
        f"**{audience.meta_name}** ({audience.mode}): Meta audience `{delivery.audience_id}`"
        f"{' (created now)' if delivery.created else ''}; {sent}; Meta received {received:,}, rejected {invalid:,}; "
        f"approximate size {metadata['approximate_count_lower_bound']:,}–{metadata['approximate_count_upper_bound']:,}."
    )
    return metadata


def previous_count(context: dg.AssetExecutionContext, partition: str) -> int | None:
    """Meta's approximate count at this audience's previous materialization (None before the first)."""
    previous = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not previous or not previous[0].asset_materialization:
        return None
    entry = previous[0].asset_materialization.metadata.get("approximate_count_lower_bound")
    return int(entry.value) if entry is not None else None
