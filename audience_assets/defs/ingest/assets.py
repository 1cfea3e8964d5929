"""Ingest: what sources deliver to the landing zone, validated, normalized and hashed.

`partner_data` (one partition per partner), `first_party_customers` (the CRM export) and
`suppression_list` (opt-outs), each one call of `core.ingestion.sources.ingest_source`, whose outcome the
asset reports: whole files that break their contract fail the run with a message naming the file and the
columns; bad rows inside a good file go to the quarantine with a reason; a delivery its guards hold is not
published.
"""

import datetime as dt
from collections.abc import Callable

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


def build_ingest_assets(
    config: ProjectConfig, storage_kind: str, limits: InflationLimits = DEFAULT_LIMITS
) -> list[dg.AssetsDefinition]:
    kinds = {"duckdb", storage_kind}
    sources = config.sources
    partners = partner_partitions(config)

    def ingest_asset(
        name: str, description: str, source_of: Callable[[dg.AssetExecutionContext], str], **options
    ) -> dg.AssetsDefinition:
        partitions = options.get("partitions_def")
        specs = [
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

        @dg.asset(name=name, description=description, group_name=GROUP, kinds=kinds, check_specs=specs, **options)
        def ingested(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
            source = source_of(context)
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

        return ingested

    partner_data = ingest_asset(
        "partner_data",
        "A partner's delivery as its clean-room table: identifiers normalized and SHA-256 hashed per Meta's "
        "rules, one row per segment attribute; rows failing the contract are quarantined with a reason.",
        lambda context: context.partition_key,
        partitions_def=partners,
        code_version="2",  # the table carries partner_identity (tables of version 1 show as changed code in the UI)
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=dt.timedelta(hours=max(p.freshness_hours for p in sources.partners.values()))
        ),
    )
    first_party_customers = ingest_asset(
        "first_party_customers",
        "The advertiser's CRM export, one row per customer id with every Meta key normalized and hashed (the "
        "payload the audiences are built from); unusable and duplicate rows are quarantined.",
        lambda context: FIRST_PARTY,
    )
    suppression_list = ingest_asset(
        "suppression_list",
        "Everyone who opted out, as hashed identifiers: never uploaded, and removed from Meta if they were.",
        lambda context: SUPPRESSION,
    )

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

    return [partner_data, first_party_customers, suppression_list, landing_zone_report]
