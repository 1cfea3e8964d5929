"""`meta_lookalike_audience`: one partition per lookalike declared in audiences.yaml (`<audience>.<country>-<size>`,
e.g. `new_parents.US-1`), downstream of its seed's `meta_custom_audience` partition.

Each materialization asks `core.meta.lookalikes` for the lookalike on Meta (made once the seed is ready, found
again by origin and spec, never twice) and reports Meta's read of it; three checks say whether it exists as on
record and what Meta's operation and delivery status are. A lookalike waiting for its seed materializes with the
reason, and its checks warn until a later materialization (after the seed's next sync, or the six-hourly
re-check) makes it.
"""

import dagster as dg

from audience_assets.core.meta.lookalikes import ensure_lookalike, judged
from audience_assets.core.meta.manager import AudienceManager
from audience_assets.core.meta.versions import lifecycle, today
from audience_assets.defs.activation.assets import GROUP, Shape
from audience_assets.defs.activation.meta_audience import meta_pool, meta_target
from audience_assets.defs.findings import check_result
from audience_assets.defs.metadata import begin_tenant_step, check_spec
from audience_assets.defs.partitions import lookalike_partitions
from audience_assets.defs.resources import MetaAudiences, Storage

CHECKS = {
    "lookalike": "The lookalike exists on Meta as on record (or was just made); warns while it waits for its seed, and "
    "when the one on record was gone and made again or found by its spec.",
    "operation_status": "Meta reports the lookalike normal (operation_status 200); still populating (Meta takes one to "
    "six hours) or anything else warns.",
    "delivery_status": "Meta can deliver ads to the lookalike (delivery_status 200).",
}


RECHECK_CRON = "0 */6 * * *"  # Meta takes one to six hours to populate a lookalike, or the seed it is made from


def lookalike_automation() -> dg.AutomationCondition:
    """After each sync of its seed, and every six hours besides: a lookalike waiting for a seed Meta was still
    populating is made without waiting for the seed's next sync, and Meta's status of a made one is read again."""
    recheck = (
        dg.AutomationCondition.cron_tick_passed(RECHECK_CRON)
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.any_deps_missing()
    )
    return (dg.AutomationCondition.eager() | recheck).with_label("eager, and every six hours")


def lookalike_definitions(shape: Shape) -> list[dg.AssetsDefinition]:
    """The tenant's lookalike asset, or nothing when none of its audiences declares a lookalike."""
    config, tenant = shape.config, shape.tenant
    keys = config.lookalikes_of(tenant)
    if not keys:
        return []
    partitions = lookalike_partitions(config, tenant)
    key = shape.key("meta_lookalike_audience")

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"meta"},
        partitions_def=partitions,
        tags={"tenant": tenant},
        deps=[
            dg.AssetDep(
                shape.key("meta_custom_audience"),
                partition_mapping=dg.StaticPartitionMapping({a: set(k) for a, k in keys.items()}),
            )
        ],
        pool=meta_pool(config, tenant),
        automation_condition=lookalike_automation(),
        check_specs=[check_spec(name, key, text, partitions_def=partitions) for name, text in CHECKS.items()],
    )
    def meta_lookalike_audience(
        context: dg.AssetExecutionContext, storage: Storage, meta: MetaAudiences
    ) -> dg.MaterializeResult:
        """A lookalike audience Meta builds from its seed: made once the seed holds at least 100 people and is no
        longer populating, found again by seed and spec (never made twice), read back from Meta every run."""
        audience, lookalike_key = context.partition_key.split(".", 1)
        spec = config.audiences[audience]
        lookalike = next(lk for lk in spec.lookalikes if lk.key == lookalike_key)
        step = begin_tenant_step(context, storage, tenant=tenant, audience=audience)
        target = meta_target(meta, config, tenant)
        version = lifecycle(target.api_version, today())
        if version.blocked:  # before any call, as for uploads: Meta would refuse it or silently upgrade it
            raise dg.Failure(version.message())
        assert target.connect is not None
        client = target.connect()
        try:
            outcome = ensure_lookalike(
                step.store, AudienceManager(client, target.ad_account_id), audience, spec, lookalike
            )
        finally:
            client.close()
        if outcome.note:  # waiting, refused, found by its spec or made again: worth a look
            context.log.warning(outcome.note)
        context.log.info(f"{context.partition_key}: {outcome.event} ({outcome.lookalike_id or 'none'})")
        metadata = {
            **outcome.metadata(),
            "seed": audience,
            "country": lookalike.country,
            "ratio": lookalike.ratio,
            "starting_ratio": lookalike.starting_ratio,
        }
        results = [check_result(name, judgement.finding()) for name, judgement in judged(outcome).items()]
        return step.result(metadata=metadata, rows=0, check_results=results, meta_requests=client.stats.requests)

    return [meta_lookalike_audience]
