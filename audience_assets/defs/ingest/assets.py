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
from audience_assets.core.ingestion.deliveries import select_files
from audience_assets.core.ingestion.first_party import ingest_first_party
from audience_assets.core.ingestion.partner import ingest_partner
from audience_assets.core.ingestion.suppression import ingest_suppression
from audience_assets.defs.ingest import checks
from audience_assets.defs.metadata import attribute, check_spec, ingest_metadata, publish, work_dir
from audience_assets.defs.partitions import partner_partitions
from audience_assets.defs.resources import Storage

GROUP = "ingest"


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
                "reason: rows read = accepted + quarantined, per file.",
                blocking=True,
                partitions_def=partitions_def,
            )
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
        files = select_files(store.list(source_config.partner_prefix(partner)), contract.delivery)
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
            metadata = publish(con, store, table, layout.partner_table(partner))
            store.upload(quarantine, layout.partner_quarantine(partner))
        context.log.info(
            f"{partner}: {report.rows_read} rows read from {len(files)} file(s), "
            f"{report.rows_accepted} accepted, {report.rows_quarantined} quarantined"
        )
        return meter.result(
            metadata={
                **metadata,
                **ingest_metadata(report),
                "partner_identities": identities,
                "quarantine_uri": store.uri(layout.partner_quarantine(partner)),
            },
            rows=report.rows_read,
            check_results=[checks.row_accounting(report)],
        )

    @dg.asset(group_name=GROUP, kinds=kinds, check_specs=accounting("first_party_customers"))
    def first_party_customers(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """The advertiser's CRM export, one row per customer id with every Meta key normalized and hashed
        (the payload the audiences are built from); unusable and duplicate rows are quarantined."""
        meter = attribute(context, storage, tenant=shared)
        store = meter.store
        contract = source_config.first_party
        files = select_files(store.list(source_config.first_party_prefix), contract.delivery)
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
            )
            metadata = publish(con, store, customers, layout.FIRST_PARTY_CUSTOMERS)
            store.upload(quarantine, layout.FIRST_PARTY_QUARANTINE)
        context.log.info(
            f"first party: {report.rows_read} rows read, {report.rows_accepted} customers, "
            f"{report.rows_quarantined} quarantined"
        )
        return meter.result(
            metadata={
                **metadata,
                **ingest_metadata(report),
                "quarantine_uri": store.uri(layout.FIRST_PARTY_QUARANTINE),
            },
            rows=report.rows_read,
            check_results=[checks.row_accounting(report)],
        )

    @dg.asset(group_name=GROUP, kinds=kinds, check_specs=accounting("suppression_list"))
    def suppression_list(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """Everyone who opted out, as hashed identifiers: never uploaded, and removed from Meta if they were."""
        meter = attribute(context, storage, tenant=shared)
        store = meter.store
        contract = source_config.suppression
        files = select_files(store.list(source_config.suppression_prefix), contract.delivery)
        with work_dir() as tmp, connect(tmp) as con:
            table, quarantine = tmp / "suppressed.parquet", tmp / "quarantine.parquet"
            report = ingest_suppression(
                con, store, files, contract=contract, out_table=table, out_quarantine=quarantine, work_dir=tmp
            )
            metadata = publish(con, store, table, layout.SUPPRESSION_LIST)
            store.upload(quarantine, layout.SUPPRESSION_QUARANTINE)
        context.log.info(f"suppression: {report.rows_read} rows read from {len(files)} file(s)")
        return meter.result(
            metadata={**metadata, **ingest_metadata(report)},
            rows=report.rows_read,
            check_results=[checks.row_accounting(report)],
        )

    return [partner_data, first_party_customers, suppression_list]
