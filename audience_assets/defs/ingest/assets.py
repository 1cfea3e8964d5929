"""Ingest: what sources deliver to the landing zone, validated, normalized and hashed.

`partner_data` (one partition per partner), `first_party_customers` (the CRM export) and
`suppression_list` (opt-outs), each one call of `core.ingestion.sources.ingest_source`, whose outcome the
asset reports: whole files that break their contract fail the run with a message naming the file and the
columns; bad rows inside a good file go to the quarantine with a reason; a delivery its guards hold is not
published.
"""

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.guards import AcceptedDelivery
from audience_assets.core.ingestion.inventory import ignored_objects
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, InflationLimits
from audience_assets.core.ingestion.sources import FIRST_PARTY, SUPPRESSION, Outcome, ingest_source
from audience_assets.core.locks import LockBusy
from audience_assets.defs.ingest import checks
from audience_assets.defs.metadata import begin_tenant_step, check_spec, ingest_metadata
from audience_assets.defs.partitions import partner_partitions
from audience_assets.defs.resources import Storage

GROUP = "ingest"
ACCEPT_DELIVERY_TAG = "audience_assets/accept_delivery"  # comma-separated sources whose guards this run overrules


def last_materialized(context: dg.AssetExecutionContext) -> AcceptedDelivery | None:
    """Before a source has a delivery record (a deployment upgraded to this version), its last published
    materialization's counts stand in: the first delivery after an upgrade is judged too."""
    partitions = [context.partition_key] if context.has_partition_key else None
    for record in context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=partitions), limit=5
    ).records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        published = metadata.get("published")
        if "rows_accepted" in metadata and (published is None or published.value):
            accepted = int(metadata["rows_accepted"].value)
            return AcceptedDelivery(accepted, accepted, 0, [], "", record.run_id)
    return None


def outcome_metadata(outcome: Outcome) -> dict:
    """An ingestion's outcome as materialization metadata: the table published (or why not), the guards'
    numbers and the row accounting."""
    if outcome.member:
        return {"published": False, "held_by": "the partner (a collaboration member: its table is in its account)"}
    if outcome.stands is not None:
        return {
            "published": False,
            "stands_since": outcome.stands.accepted_at,
            "dagster/row_count": outcome.stands.rows_accepted,
        }
    table = outcome.table
    published = (
        {
            "published": True,
            "dagster/row_count": table.rows,
            "dagster/uri": table.uri,
            "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in table.columns]),
        }
        if table
        else {"published": False, "dagster/row_count": 0}
    )
    extra = {"partner_identities": outcome.identities} if outcome.identities is not None else {}
    quarantine = {"quarantine_uri": outcome.quarantine_uri} if outcome.source != SUPPRESSION else {}
    return {**published, **outcome.verdict.metadata(), **ingest_metadata(outcome.report), **extra, **quarantine}


def log_outcome(context: dg.AssetExecutionContext, outcome: Outcome) -> None:
    source, report = outcome.source, outcome.report
    for key, reason in sorted(outcome.not_read.items()):
        context.log.info(f"{source}: not read: {key}: {reason}")
    if outcome.member:
        context.log.info(
            f"{source}: a member of the collaboration (clean_room.member): its table is associated from its own "
            "account and nothing of it lands here; the match reads it there"
        )
        return
    if outcome.stands is not None:
        context.log.info(
            f"{source}: no current file in the landing zone (retention deleted it, or it was moved away, or only "
            f"superseded snapshots remain); the delivery accepted at {outcome.stands.accepted_at} stands"
        )
        return
    context.log.info(
        f"{source}: {report.rows_read} rows read from {len(outcome.files)} file(s), {report.rows_accepted} "
        f"accepted, {report.rows_quarantined} quarantined"
    )
    if report.out_of_balance:
        context.log.warning(f"{source}: rows do not add up in {', '.join(report.out_of_balance)}: not published")
    elif outcome.verdict.problems:  # held, or published anyway because a run accepted it
        context.log.warning(outcome.verdict.message())


@dataclasses.dataclass(frozen=True)
class IngestSource:
    """What sets one ingest asset apart from the others: its name, description, which source a run of it reads,
    and the definition options only it has (partitions, code version, freshness)."""

    name: str
    description: str
    source_of: Callable[[dg.AssetExecutionContext], str]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def ingest_sources(config: ProjectConfig) -> tuple[IngestSource, ...]:
    """The three ingest assets: a partner's delivery (one partition per partner), the CRM export, the opt-outs."""
    partner_data = IngestSource(
        "partner_data",
        "A partner's delivery as its clean-room table: identifiers normalized and SHA-256 hashed per Meta's "
        "rules, one row per segment attribute; rows failing the contract are quarantined with a reason.",
        lambda context: context.partition_key,
        {
            "partitions_def": partner_partitions(config),
            # the table carries partner_identity (tables of version 1 show as changed code in the UI)
            "code_version": "2",
            "freshness_policy": dg.FreshnessPolicy.time_window(
                fail_window=dt.timedelta(hours=max(p.freshness_hours for p in config.sources.partners.values()))
            ),
        },
    )
    first_party_customers = IngestSource(
        "first_party_customers",
        "The advertiser's CRM export, one row per customer id with every Meta key normalized and hashed (the "
        "payload the audiences are built from); unusable and duplicate rows are quarantined.",
        lambda context: FIRST_PARTY,
    )
    suppression_list = IngestSource(
        "suppression_list",
        "Everyone who opted out, as hashed identifiers: never uploaded, and removed from Meta if they were.",
        lambda context: SUPPRESSION,
    )
    return partner_data, first_party_customers, suppression_list


def ingest_check_specs(name: str, partitions: dg.PartitionsDefinition | None) -> list[dg.AssetCheckSpec]:
    """The blocking checks every ingest asset carries: rows add up, and the delivery's guards let it through."""
    return [
        check_spec(
            checks.ROW_ACCOUNTING,
            name,
            "Every delivered row is accepted or quarantined with a "
            "reason: rows read (counted over the raw bytes) = accepted + quarantined, per file.",
            blocking=True,
            partitions_def=partitions,
        ),
        check_spec(
            checks.DELIVERY_GUARD,
            name,
            "The delivery is not empty, did not shrink by more than max_shrink against the previous accepted "
            "one and quarantined at most max_quarantine of its rows; else it is not published.",
            blocking=True,
            partitions_def=partitions,
        ),
    ]


def ingest(
    context: dg.AssetExecutionContext, storage: Storage, config: ProjectConfig, source: str, limits: InflationLimits
) -> dg.MaterializeResult:
    """One run of an ingest asset: the source ingested in its tenant's store (unless its guards hold it and no
    run tag accepts it), its outcome logged and reported with both checks."""
    partner = source if source not in (FIRST_PARTY, SUPPRESSION) else None
    tenant = config.tenant_of_partner(partner) if partner else config.deployment_tenant
    step = begin_tenant_step(context, storage, tenant=tenant, partner=partner)
    accepted = {s.strip() for s in context.run.tags.get(ACCEPT_DELIVERY_TAG, "").split(",")}
    try:
        outcome = ingest_source(
            step.store,
            config,
            source,
            run_id=context.run.run_id,
            accept=source in accepted,
            fallback=lambda: last_materialized(context),
            limits=limits,
        )
    except LockBusy as busy:
        raise dg.Failure(str(busy)) from None
    log_outcome(context, outcome)
    return step.result(
        metadata=outcome_metadata(outcome),
        rows=outcome.report.rows_read,
        check_results=[checks.row_accounting(outcome.report), checks.delivery_guard(outcome.verdict)],
    )


def build_ingest_asset(
    config: ProjectConfig, spec: IngestSource, kinds: set[str], limits: InflationLimits
) -> dg.AssetsDefinition:
    """One ingest asset from its spec: the skeleton all three share."""
    specs = ingest_check_specs(spec.name, spec.options.get("partitions_def"))

    @dg.asset(
        name=spec.name,
        description=spec.description,
        group_name=GROUP,
        kinds=kinds,
        check_specs=specs,
        **spec.options,
    )
    def ingested(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        return ingest(context, storage, config, spec.source_of(context), limits)

    return ingested


def build_landing_zone_report(config: ProjectConfig, storage_kind: str) -> dg.AssetsDefinition:
    """The landing zone's unread objects, as an asset the sensor refreshes."""

    @dg.asset(group_name=GROUP, kinds={storage_kind})  # it reads the store's listing
    def landing_zone_report(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """What the landing zone holds that no source reads, with the reason: files in undeclared partner
        folders, outside every source's prefix, in a source's sub-folder, named as unfinished uploads, or
        superseded by a later delivery. Refreshed by the sensor."""
        ignored = list(ignored_objects(storage.store(), config))
        for item in ignored:
            context.log.warning(f"not read: {item.key} ({item.size:,} bytes): {item.reason}")
        lines = ["| object | bytes | why it is not read |", "|---|---:|---|"]
        lines += [f"| `{i.key}` | {i.size:,} | {i.reason} |" for i in ignored]
        return dg.MaterializeResult(
            metadata={
                "ignored_objects": len(ignored),
                "report": dg.MetadataValue.md("\n".join(lines) if ignored else "_every object is read by a source_"),
            }
        )

    return landing_zone_report


def build_ingest_assets(
    config: ProjectConfig, storage_kind: str, limits: InflationLimits = DEFAULT_LIMITS
) -> list[dg.AssetsDefinition]:
    """The three ingest assets, from one skeleton and their specs, and the landing zone's report."""
    kinds = {"duckdb", storage_kind}
    ingested = [build_ingest_asset(config, spec, kinds, limits) for spec in ingest_sources(config)]
    return [*ingested, build_landing_zone_report(config, storage_kind)]
