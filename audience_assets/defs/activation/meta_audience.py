"""`meta_custom_audience`: the Meta custom audience itself, and the checks on what Meta says after a sync.

It creates the audience if missing and uploads the stored plan's chunks through upload sessions, resuming from
the ledger after a crash. Before anything is sent it holds a plan that would remove too much (unless a run
approves it) and an `approval: manual` audience's plan in an unattended run (`core.audience.approval`). The
checks are separate from the asset so that a held upload is simply not materialized: the plan waits, and the
checks do not run on numbers that do not exist.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg

from audience_assets.core.audience.approval import plan_summary
from audience_assets.core.config import Audience, ProjectConfig
from audience_assets.core.meta.health import delivery_health, operation_health
from audience_assets.core.meta.sync import MetaTarget, RunScope, SyncOutcome, sync
from audience_assets.defs.activation import checks
from audience_assets.defs.activation.assets import Shape, held_as_failure
from audience_assets.defs.metadata import begin_tenant_step, check_spec, history_table
from audience_assets.defs.resources import MetaAudiences, Metrics, Storage

META_POOL = "meta_api"


def meta_pool(config: ProjectConfig, tenant: str) -> str:
    """The concurrency pool of a tenant's uploads: one per ad account, so one account's throttling or
    failure never holds another's slots. The implicit tenant keeps the plain `meta_api` pool."""
    declared = config.tenant(tenant)
    return f"{META_POOL}:{declared.meta_ad_account_id}" if declared else META_POOL


def meta_audience_definitions(shape: Shape) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    return [meta_audience_asset(shape), meta_audience_checks(shape)]


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
        target = meta_target(meta, config, tenant)
        run = RunScope(
            context.run.run_id,
            context.run.tags,
            report=context.log.info,
            warn=context.log.warning,
            publish=lambda values: metrics.publish(values, tenant=tenant, audience=name),
        )
        prefixes = [config.sources.partner_prefix(p) for p in audience.select]
        with held_as_failure():
            outcome = sync(step.store, name, audience, target, run, prefixes)
        if outcome.awaiting_approval:
            context.log.info(outcome.summary(name))
            summary = {
                "awaiting_approval": True,
                "upload_id": outcome.plan.upload_id,
                "plan": plan_summary(outcome.plan),
            }
            context.log_event(dg.AssetObservation(asset_key=key, partition=name, metadata=summary))
            return
        if outcome.delivery.binding and outcome.delivery.binding.note:
            context.log.warning(outcome.delivery.binding.note)
        context.log.info(outcome.summary(name))
        yield step.result(
            metadata=sync_metadata(context, outcome),
            rows=outcome.figures["rows_sent"],
            meta_requests=outcome.requests,
        )

    return meta_custom_audience


def meta_target(meta: MetaAudiences, config: ProjectConfig, tenant: str) -> MetaTarget:
    """The tenant's ad account and how to connect to it (the token is read only when a sync uploads); the built-in
    sandbox also reports how many people it holds."""
    declared = config.tenant(tenant)
    extra_fields = ["sandbox_member_count"] if meta.sandbox_state else []
    return MetaTarget(meta.ad_account(declared), meta.api_version, lambda: meta.client(declared), extra_fields)


def sync_metadata(context: dg.AssetExecutionContext, outcome: SyncOutcome) -> dict[str, Any]:
    """The sync's figures for the UI: the summary as Markdown, Meta's count before (of the same Meta audience),
    and the audience's size history as a table."""
    metadata = dict(outcome.figures)
    metadata["summary"] = dg.MetadataValue.md(metadata["summary"])
    before = previous_count(context, context.partition_key, outcome.delivery.audience_id)
    metadata["audience_size_history"] = history_table(
        context, metadata, ("approximate_count_lower_bound", "rows_sent", "num_invalid_entries")
    )
    metadata["count_before"] = before if before is not None else -1
    return metadata


CHECKS = {
    checks.INVALID_ENTRY_RATE: "Meta rejected at most the audience's max_invalid_rate of the entries sent.",
    checks.COUNT_DIRECTION: "Meta's approximate count moved the way the sync did (up after adds, down after removals).",
    checks.DELIVERY_STATUS: "Meta can deliver ads to the audience (delivery_status 200); too small or unusable is "
    "explained with the audience's own numbers.",
    checks.OPERATION_STATUS: "Meta reports the audience normal (operation_status 200): not low-match, invalid-heavy, "
    "populating, stale, expiring, of an inactive account or flagged.",
    checks.API_VERSION_ANSWER: "Meta answered the configured Marketing API version itself (no "
    "X-Ad-Api-Version-Warning saying it upgraded a retired version).",
    checks.AUDIENCE_BINDING: "The sync wrote to the Meta audience this deployment filled before (or created it); "
    "warns when that audience was gone and recreated, renamed, adopted or found by name.",
}


def meta_audience_checks(shape: Shape) -> dg.AssetChecksDefinition:
    """One step judges every number the sync produced (a step per check would cost a process each in a
    multiprocess run). A held upload materializes nothing, so these are skipped with it."""
    config, key = shape.config, shape.key("meta_custom_audience")

    @dg.multi_asset_check(
        specs=[check_spec(name, key, text, partitions_def=shape.partitions) for name, text in CHECKS.items()],
        name="meta_audience_checks",
    )
    def meta_audience_checks(context: dg.AssetCheckExecutionContext):
        figures = latest_figures(context, key)
        audience = config.audiences[context.op_execution_context.partition_key]
        yield from judge_sync(figures, audience)

    return meta_audience_checks


def judge_sync(figures: dict[str, Any], audience: Audience) -> Iterator[dg.AssetCheckResult]:
    """The checks on what Meta says after a sync, from the sync's recorded figures."""
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
