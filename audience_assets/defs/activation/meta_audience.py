"""`meta_custom_audience`: the Meta custom audience itself, and the checks on what Meta says after a sync.

It creates the audience if missing and uploads the stored plan's chunks through upload sessions, resuming from
the ledger after a crash. Before anything is sent it holds a plan that would remove too much (unless a run
approves it) and an `approval: manual` audience's plan in an unattended run (`core.audience.approval`). The
checks are separate from the asset so that a held upload is simply not materialized: the plan waits, and the
checks do not run on numbers that do not exist.
"""

import datetime as dt
from typing import Any

import dagster as dg

from audience_assets.core.audience.approval import approvals, awaiting_approval, plan_summary, review_removals
from audience_assets.core.audience.plan import load_plan
from audience_assets.core.audience.planning import PlanRefused
from audience_assets.core.config import Audience, ProjectConfig
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
from audience_assets.core.meta.health import delivery_health, operation_health
from audience_assets.core.meta.uploader import UploadIncomplete
from audience_assets.core.meta.versions import lifecycle, today
from audience_assets.core.store import Store
from audience_assets.defs.activation import checks
from audience_assets.defs.activation.assets import Shape, writing
from audience_assets.defs.metadata import begin_tenant_step, check_spec, history_table
from audience_assets.defs.resources import MetaAudiences, Metrics, Storage

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


def meta_audience_definitions(shape: Shape) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    config, tenant = shape.config, shape.tenant
    stale_after = dt.timedelta(hours=min(config.audiences[a].freshness_hours for a in config.audiences_of(tenant)))
    key = shape.key("meta_custom_audience")

    @dg.asset(
        **shape.options({"meta"}),
        deps=[shape.key("audience_chunks")],
        pool=meta_pool(config, tenant),
        automation_condition=dg.AutomationCondition.eager(),
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=stale_after),
        output_required=False,  # a held upload (manual approval) materializes nothing
    )
    def meta_custom_audience(
        context: dg.AssetExecutionContext, storage: Storage, meta: MetaAudiences, metrics: Metrics
    ):
        """The Meta custom audience: created if missing, preflighted, then updated with the chunks through
        upload sessions; a crashed upload resumes from the ledger without sending anything twice."""
        name = context.partition_key
        audience = config.audiences[name]
        step = begin_tenant_step(context, storage, tenant=tenant, audience=name)
        store = step.store
        plan = load_plan(store, name)
        if plan is None:
            raise dg.Failure(f"no upload plan for {name!r}: materialize audience_chunks first")
        version = lifecycle(meta.api_version, today())
        if version.blocked:  # before any call: Meta would refuse it (2635) or silently upgrade it
            raise dg.Failure(version.message(), metadata={"api_version": meta.api_version})
        tags = context.run.tags
        if awaiting_approval(name, audience.approval == "manual", tags):
            context.log.info(
                f"{name}: approval is manual; the plan ({plan_summary(plan)}) waits until someone materializes "
                "meta_custom_audience for it. Nothing was sent."
            )
            context.log_event(
                dg.AssetObservation(
                    asset_key=key,
                    partition=name,
                    metadata={"awaiting_approval": True, "upload_id": plan.upload_id, "plan": plan_summary(plan)},
                )
            )
            return
        review = review_removals(name, plan, audience.max_removal, tags)
        if review.blocked:
            raise dg.Failure(review.message(), metadata=review.metadata())
        if review.approved and review.over_limit:
            context.log.warning(review.message())
        with writing(store, name, context.run.run_id):  # one run at a time uploads an audience
            client = meta.client(config.tenant(tenant))
            try:
                delivery = deliver(
                    store,
                    name,
                    audience,
                    plan,
                    client,
                    ad_account_id=meta.ad_account(config.tenant(tenant)),
                    run_id=context.run.run_id,
                    approvals=approvals(review, audience.approval == "manual", tags),
                    approved_removals=review.approved,
                    extra_fields=["sandbox_member_count"] if meta.sandbox_state else [],
                    report=context.log.info,
                )
            except (
                Exception
            ) as error:  # every failed upload counts (the failed-upload alarm watches it), whatever failed
                try:
                    metrics.publish(
                        {"upload_failures": 1, "throttled_requests": client.stats.throttled},
                        tenant=tenant,
                        audience=name,
                    )
                except Exception as unpublished:  # never hide the upload's own error behind the metric's
                    context.log.warning(f"could not publish the failed upload's metrics: {unpublished}")
                if isinstance(error, (UnrecordedAudience, RemovalsHeld, PlanRefused, MetaPreflightError)):
                    raise dg.Failure(str(error)) from None  # held, with what to do: not a crash
                if not isinstance(error, UploadIncomplete):
                    raise
                raise dg.Failure(
                    str(error),
                    metadata={"upload_id": error.upload_id, "dead_letters": error.dead, **client_figures(client)},
                ) from None
            finally:
                client.close()
        plan = delivery.plan or plan
        metadata = delivery_metadata(delivery, audience, plan.upload_id, client)
        if delivery.binding and delivery.binding.note:
            context.log.warning(delivery.binding.note)
        before = previous_count(context, name, delivery.audience_id)
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
        metadata["count_before"] = before if before is not None else -1
        metadata["api_version"] = meta.api_version
        metadata["ldu_rows"] = plan.ldu_rows
        metadata["api_version_warning"] = client.stats.version_warning
        metadata.update(review.metadata())
        yield step.result(metadata=metadata, rows=metadata["rows_sent"], meta_requests=client.stats.requests)

    descriptions = {
        checks.INVALID_ENTRY_RATE: "Meta rejected at most the audience's max_invalid_rate of the entries sent.",
        checks.COUNT_DIRECTION: "Meta's approximate count moved the way the sync did (up after adds, down after "
        "removals).",
        checks.DELIVERY_STATUS: "Meta can deliver ads to the audience (delivery_status 200); too small or unusable "
        "is explained with the audience's own numbers.",
        checks.OPERATION_STATUS: "Meta reports the audience normal (operation_status 200): not low-match, "
        "invalid-heavy, populating, stale, expiring, of an inactive account or flagged.",
        checks.API_VERSION_ANSWER: "Meta answered the configured Marketing API version itself (no "
        "X-Ad-Api-Version-Warning saying it upgraded a retired version).",
        checks.AUDIENCE_BINDING: "The sync wrote to the Meta audience this deployment filled before (or created it); "
        "warns when that audience was gone and recreated, renamed, adopted or found by name.",
    }

    # One step judges every number the sync produced (a step per check would cost a process each in a
    # multiprocess run). A held upload materializes nothing, so these are skipped with it.
    @dg.multi_asset_check(
        specs=[check_spec(name, key, text, partitions_def=shape.partitions) for name, text in descriptions.items()],
        name="meta_audience_checks",
    )
    def meta_audience_checks(context: dg.AssetCheckExecutionContext):
        figures = latest_figures(context, key)
        audience = config.audiences[context.op_execution_context.partition_key]
        before = int(figures["count_before"])
        net = int(figures.get("add_rows", 0)) - int(figures.get("remove_rows", 0))
        yield checks.invalid_entry_rate(
            int(figures["num_invalid_entries"]), int(figures["num_received"]), audience.max_invalid_rate
        )
        yield checks.count_direction(None if before < 0 else before, int(figures["approximate_count_lower_bound"]), net)
        yield checks.health(
            checks.DELIVERY_STATUS,
            delivery_health(
                {"code": figures.get("delivery_status_code"), "description": figures.get("delivery_status")},
                rows_held=int(figures.get("dagster/row_count", figures.get("rows_sent", 0))),
                approximate_count=int(figures.get("approximate_count_lower_bound", -1)),
            ),
        )
        yield checks.health(
            checks.OPERATION_STATUS,
            operation_health(
                {"code": figures.get("operation_status_code"), "description": figures.get("operation_status")}
            ),
        )
        yield checks.version_warning(str(figures.get("api_version", "")), str(figures.get("api_version_warning", "")))
        yield checks.audience_binding(
            str(figures.get("binding_event", "")), str(figures.get("binding_note", "")), str(figures["audience_id"])
        )

    return [meta_custom_audience, meta_audience_checks]


def latest_figures(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> dict[str, Any]:
    """The numbers of the audience's latest materialization (the one this run just made)."""
    partition = context.op_execution_context.partition_key
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    if materialization is None:
        raise dg.Failure(f"no materialization of {key.to_user_string()} [{partition}] to check")
    return {k: v.value for k, v in materialization.metadata.items()}


def delivery_metadata(delivery: Delivery, audience: Audience, upload_id: str, client: GraphClient) -> dict[str, Any]:
    """`core.meta.delivery.delivery_figures`, its one-line summary as Markdown for the UI."""
    figures = delivery_figures(delivery, audience, upload_id, client)
    figures["summary"] = dg.MetadataValue.md(figures["summary"])
    return figures


def previous_count(context: dg.AssetExecutionContext, partition: str, audience_id: str) -> int | None:
    """Meta's approximate count at this audience's previous materialization, when it was of the same Meta
    audience (None before the first, and after the audience was recreated or another bound)."""
    previous = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not previous or not previous[0].asset_materialization:
        return None
    metadata = previous[0].asset_materialization.metadata
    entry, bound = metadata.get("approximate_count_lower_bound"), metadata.get("audience_id")
    if entry is None or (bound is not None and str(bound.value) != audience_id):
        return None
    return int(entry.value)
