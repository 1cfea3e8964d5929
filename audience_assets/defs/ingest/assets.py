"""Ingest: what sources deliver to the landing zone, validated, normalized and hashed.

`partner_data` (one partition per partner), `first_party_customers` (the CRM export) and
`suppression_list` (opt-outs). Whole files that break their contract fail the run with a message
naming the file and the columns; bad rows inside a good file go to the quarantine with a reason.
"""

import datetime as dt

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.config import ProjectConfig
from audience_assets.core.duck import connect
from audience_assets.core.ingestion.arrivals import current_files
from audience_assets.core.ingestion.first_party import ingest_first_party
from audience_assets.core.ingestion.guards import AcceptedDelivery, judge, previous_delivery, remember
from audience_assets.core.ingestion.inventory import ignored_objects
from audience_assets.core.ingestion.partner import ingest_partner
from audience_assets.core.ingestion.read import IngestReport
from audience_assets.core.ingestion.suppression import ingest_suppression
from audience_assets.core.store import Store, optional_copy
from audience_assets.defs.ingest import checks
from audience_assets.defs.metadata import attribute, check_spec, ingest_metadata, publish, work_dir
from audience_assets.defs.partitions import partner_partitions
from audience_assets.defs.resources import Storage

GROUP = "ingest"
ACCEPT_DELIVERY_TAG = "audience_assets/accept_delivery"  # comma-separated sources whose guards this run overrules


def publish_if_guards_pass(
    context: dg.AssetExecutionContext,
    con,
    store: Store,
    source: str,
    guards,
    report: IngestReport,
    table,
    key: str,
    incremental: bool = False,
    files: list | None = None,
    only_grows: bool = False,
) -> tuple[dict, list[dg.AssetCheckResult]]:
    """Judge the delivery; publish it (and remember it as the last accepted one) only if its guards pass or
    the run accepts it. Returns the materialization's metadata and the ingest checks' results. A table that
    `only_grows` (the opt-out list: the previous list is always part of the new one) is always published: its
    guards report, since holding it back would only withhold new opt-outs."""
    tagged = {s.strip() for s in context.run.tags.get(ACCEPT_DELIVERY_TAG, "").split(",")}
    accepted = only_grows or source in tagged
    previous = previous_delivery(store, source) or last_materialized(context)
    verdict = judge(source, report, previous, guards, accepted=accepted, incremental=incremental)
    accounting = checks.row_accounting(report)
    if verdict.blocked or not accounting.passed:  # rows that do not add up are not published either
        context.log.warning(verdict.message() if verdict.blocked else f"{source}: {accounting.description}")
        metadata: dict = {"published": False, "dagster/row_count": 0}
    else:
        if verdict.accepted:
            context.log.warning(verdict.message())
        metadata = {**publish(con, store, table, key), "published": True}
        remember(store, source, report, verdict, context.run.run_id, {f.key: f.version for f in files or []})
    results = [accounting, checks.delivery_guard(verdict)]
    return {**metadata, **verdict.metadata(), **ingest_metadata(report)}, results


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


def current(context: dg.AssetExecutionContext, store: Store, source: str, prefix: str, contract) -> list:
    """The source's current files, chosen by arrival (`core.ingestion.arrivals`); what else its prefix holds is
    logged as not read, with the reason."""
    chosen = current_files(store, source, prefix, contract)
    for key, reason in sorted(chosen.not_read.items()):
        context.log.info(f"{source}: not read: {key}: {reason}")
    return chosen.files


def standing(store: Store, source: str, files: list) -> AcceptedDelivery | None:
    """With no current file (retention deleted it, housekeeping moved it away, or only superseded snapshots
    remain), the last accepted delivery: its published data stands."""
    previous = previous_delivery(store, source) if not files else None
    return previous if previous is not None and previous.files else None


def standing_result(context: dg.AssetExecutionContext, meter, source: str, record: AcceptedDelivery, guards):
    """Nothing new to ingest: the published data of `record` stays; both checks pass on an empty report."""
    context.log.info(
        f"{source}: no current file in the landing zone (retention deleted it, or it was moved away, or only "
        f"superseded snapshots remain); the delivery accepted at {record.accepted_at} stands"
    )
    empty = IngestReport()
    verdict = judge(source, empty, None, guards)
    return meter.result(
        metadata={"published": False, "stands_since": record.accepted_at, "dagster/row_count": record.rows_accepted},
        rows=0,
        check_results=[checks.row_accounting(empty), checks.delivery_guard(verdict)],
    )


def build_ingest_assets(config: ProjectConfig, storage_kind: str) -> list[dg.AssetsDefinition]:
    kinds = {"duckdb", storage_kind}
    source_config = config.sources
    shared = config.deployment_tenant
    partners = partner_partitions(config)

    def accounting(asset: str, partitions_def: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
        return [
            check_spec(
                checks.ROW_ACCOUNTING,
                asset,
                "Every delivered row is accepted or quarantined with a "
                "reason: rows read (counted over the raw bytes) = accepted + quarantined, per file.",
                blocking=True,
                partitions_def=partitions_def,
            ),
            check_spec(
                checks.DELIVERY_GUARD,
                asset,
                "The delivery is not empty, did not shrink by more than max_shrink against the previous accepted "
                "one and quarantined at most max_quarantine of its rows; else it is not published.",
                blocking=True,
                partitions_def=partitions_def,
            ),
        ]

    # code version 2: the table carries partner_identity (tables of version 1 show as changed code in the UI)
    @dg.asset(
        group_name=GROUP,
        kinds=kinds,
        partitions_def=partners,
        check_specs=accounting("partner_data", partners),
        code_version="2",
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=dt.timedelta(hours=max(p.freshness_hours for p in source_config.partners.values()))
        ),
    )
    def partner_data(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """A partner's delivery as its clean-room table: identifiers normalized and SHA-256 hashed per
        Meta's rules, one row per segment attribute; rows failing the contract are quarantined with a reason."""
        partner = context.partition_key
        meter = attribute(context, storage, tenant=config.tenant_of_partner(partner), partner=partner)
        store = meter.store
        contract = source_config.partners[partner]
        files = current(context, store, partner, source_config.partner_prefix(partner), contract)
        if record := standing(store, partner, files):
            return standing_result(context, meter, partner, record, source_config.guards_for(partner))
        with work_dir() as tmp, connect(tmp) as con:
            table, quarantine = tmp / "partner.parquet", tmp / "quarantine.parquet"
            report, identities = ingest_partner(
                con,
                store,
                files,
                partner=partner,
                contract=contract,
                out_table=table,
                out_quarantine=quarantine,
                work_dir=tmp,
            )
            context.log.info(
                f"{partner}: {report.rows_read} rows read from {len(files)} file(s), "
                f"{report.rows_accepted} accepted, {report.rows_quarantined} quarantined"
            )
            metadata, results = publish_if_guards_pass(
                context,
                con,
                store,
                partner,
                source_config.guards_for(partner),
                report,
                table,
                layout.partner_table(partner),
                incremental=contract.delivery == "incremental",
                files=files,
            )
            store.upload(quarantine, layout.partner_quarantine(partner))
        return meter.result(
            metadata={
                **metadata,
                "partner_identities": identities,
                "quarantine_uri": store.uri(layout.partner_quarantine(partner)),
            },
            rows=report.rows_read,
            check_results=results,
        )

    @dg.asset(group_name=GROUP, kinds=kinds, check_specs=accounting("first_party_customers"))
    def first_party_customers(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """The advertiser's CRM export, one row per customer id with every Meta key normalized and hashed
        (the payload the audiences are built from); unusable and duplicate rows are quarantined."""
        meter = attribute(context, storage, tenant=shared)
        store = meter.store
        contract = source_config.first_party
        files = current(context, store, "first_party", source_config.first_party_prefix, contract)
        if record := standing(store, "first_party", files):
            return standing_result(context, meter, "first_party", record, source_config.guards_for("first_party"))
        keys = config.payload_keys
        with work_dir() as tmp, connect(tmp) as con:
            customers, quarantine = tmp / "customers.parquet", tmp / "quarantine.parquet"
            report = ingest_first_party(
                con,
                store,
                files,
                contract=contract,
                keys=keys,
                out_customers=customers,
                out_quarantine=quarantine,
                work_dir=tmp,
                consent_columns=config.consent_columns,
            )
            context.log.info(
                f"first party: {report.rows_read} rows read, {report.rows_accepted} customers, "
                f"{report.rows_quarantined} quarantined"
            )
            metadata, results = publish_if_guards_pass(
                context,
                con,
                store,
                "first_party",
                source_config.guards_for("first_party"),
                report,
                customers,
                layout.FIRST_PARTY_CUSTOMERS,
                incremental=contract.delivery == "incremental",
                files=files,
            )
            store.upload(quarantine, layout.FIRST_PARTY_QUARANTINE)
        return meter.result(
            metadata={**metadata, "quarantine_uri": store.uri(layout.FIRST_PARTY_QUARANTINE)},
            rows=report.rows_read,
            check_results=results,
        )

    @dg.asset(group_name=GROUP, kinds=kinds, check_specs=accounting("suppression_list"))
    def suppression_list(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """Everyone who opted out, as hashed identifiers: never uploaded, and removed from Meta if they were."""
        meter = attribute(context, storage, tenant=shared)
        store = meter.store
        contract = source_config.suppression
        files = current(context, store, "suppression", source_config.suppression_prefix, contract)
        with (
            work_dir() as tmp,
            connect(tmp) as con,
            optional_copy(store, layout.SUPPRESSION_RETIRED) as retired,
            optional_copy(store, layout.SUPPRESSION_LIST) as published,
        ):
            table, quarantine = tmp / "suppressed.parquet", tmp / "quarantine.parquet"
            report = ingest_suppression(
                con,
                store,
                files,
                contract=contract,
                out_table=table,
                out_quarantine=quarantine,
                work_dir=tmp,
                retired=[p for p in (retired, published) if p is not None],
            )
            context.log.info(f"suppression: {report.rows_read} rows read from {len(files)} file(s)")
            metadata, results = publish_if_guards_pass(
                context,
                con,
                store,
                "suppression",
                source_config.guards_for("suppression"),
                report,
                table,
                layout.SUPPRESSION_LIST,
                incremental=True,
                files=files,
                only_grows=True,
            )
            store.upload(quarantine, layout.SUPPRESSION_QUARANTINE)
        return meter.result(metadata=metadata, rows=report.rows_read, check_results=results)

    @dg.asset(group_name=GROUP, kinds={storage_kind})  # it reads the store's listing
    def landing_zone_report(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """What the landing zone holds that no source reads, with the reason: files in undeclared partner
        folders, outside every source's prefix, or named as unfinished uploads. Refreshed by the sensor."""
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
