"""Clean room: the first-party table published for the collaboration, and each partner's match.

Only hashed identifiers and the advertiser's own customer ids enter the room; only customer ids and the
partner's segment attributes come out (the `audience_match` analysis template).
"""

from typing import Any

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.cleanroom.match import MatchResult
from audience_assets.core.config import ProjectConfig
from audience_assets.core.duck import connect
from audience_assets.core.ingestion.first_party import publish_first_party
from audience_assets.defs.clean_room import checks
from audience_assets.defs.metadata import begin_tenant_step, check_spec, history_table, publish, work_dir
from audience_assets.defs.partitions import partner_partitions
from audience_assets.defs.resources import CleanRoom, Metrics, Storage

GROUP = "clean_room"


def build_clean_room_assets(config: ProjectConfig, storage_kind: str) -> list[dg.AssetsDefinition]:
    """The advertiser's table for the collaboration, and each partner's match against it."""
    first_party_table = build_first_party_table_asset(config, storage_kind)
    return [first_party_table, build_matches_asset(config, first_party_table)]


def build_first_party_table_asset(config: ProjectConfig, storage_kind: str) -> dg.AssetsDefinition:
    """The first-party table as an asset that follows `first_party_customers`."""

    @dg.asset(
        group_name=GROUP,
        kinds={"duckdb", storage_kind},
        deps=["first_party_customers"],
        automation_condition=dg.AutomationCondition.eager(),
    )
    def clean_room_first_party_table(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """The advertiser's side of the clean room: customer id and hashed match keys only, nothing else."""
        return publish_first_party_table(context, storage, config)

    return clean_room_first_party_table


def publish_first_party_table(
    context: dg.AssetExecutionContext, storage: Storage, config: ProjectConfig
) -> dg.MaterializeResult:
    """Publish the customers' ids and hashed match keys (nothing else) where the collaboration reads them."""
    match_keys = config.match_keys
    step = begin_tenant_step(context, storage, tenant=config.deployment_tenant)
    store = step.store
    with work_dir() as tmp, connect(tmp) as con, store.local_copy(layout.FIRST_PARTY_CUSTOMERS) as customers:
        table = tmp / "first_party.parquet"
        publish_first_party(con, customers, table, match_keys)
        metadata = publish(con, store, table, layout.CLEAN_ROOM_FIRST_PARTY)
    return step.result(metadata={**metadata, "match_keys": ", ".join(match_keys)}, rows=metadata["dagster/row_count"])


def build_matches_asset(config: ProjectConfig, first_party_table: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The per-partner match as an asset that follows the partner's data and the first-party table."""
    partners = partner_partitions(config)

    @dg.asset(
        group_name=GROUP,
        kinds={"cleanrooms", "duckdb"},
        partitions_def=partners,
        deps=["partner_data", first_party_table],
        automation_condition=dg.AutomationCondition.eager(),
        check_specs=[
            check_spec(
                checks.MATCH_RATE,
                "clean_room_matches",
                "At least the partner's min_match_rate of first-party customers matched.",
                partitions_def=partners,
            )
        ],
    )
    def clean_room_matches(
        context: dg.AssetExecutionContext, storage: Storage, clean_room: CleanRoom, metrics: Metrics
    ) -> dg.MaterializeResult:
        """The partner's match: advertiser customer ids with the partner's segment attributes, for every
        partner record whose hashed email or phone equals the advertiser's, computed as a protected query."""
        return match_partner(context, storage, clean_room, metrics, config)

    return clean_room_matches


def match_partner(
    context: dg.AssetExecutionContext, storage: Storage, clean_room: CleanRoom, metrics: Metrics, config: ProjectConfig
) -> dg.MaterializeResult:
    """Run the partition's partner match in the clean room, and report its rate (logged, recorded, published as a
    metric and checked against the partner's minimum)."""
    partner = context.partition_key
    tenant = config.tenant_of_partner(partner)
    step = begin_tenant_step(context, storage, tenant=tenant, partner=partner)
    store = step.store
    result = clean_room.match(store, config, partner, context.run.run_id)
    rate = result.matched_customers / result.first_party_customers if result.first_party_customers else 0.0
    context.log.info(
        f"{partner}: {result.matched_customers} of {result.first_party_customers} customers matched "
        f"({rate:.1%}) by protected query {result.query.id}"
    )
    metadata = match_metadata(result, store.uri(layout.matches(partner)), clean_room.engine, rate)
    metadata["match_rate_history"] = history_table(
        context,
        {"matched_customers": result.matched_customers, "match_rate": round(rate, 6)},
        ("matched_customers", "match_rate"),
    )
    metrics.publish({"match_rate": round(rate, 6)}, tenant=tenant, partner=partner)
    query_seconds = (
        result.query.duration_ms + (result.overlap_query.duration_ms if result.overlap_query else 0)
    ) / 1000
    return step.result(
        metadata=metadata,
        rows=result.first_party_customers + (result.partner_identities or 0),
        clean_room_seconds=query_seconds,
        check_results=[checks.match_rate(round(rate, 6), config.partners[partner].min_match_rate)],
    )


def match_metadata(result: MatchResult, uri: str, engine: str, rate: float) -> dict[str, Any]:
    """A match as materialization metadata: its counts and rates, and the protected queries that made it."""
    metadata: dict[str, Any] = {
        "dagster/row_count": result.rows,
        "dagster/uri": uri,
        "matched_customers": result.matched_customers,
        "match_rate": dg.MetadataValue.float(round(rate, 6)),
        "first_party_customers": result.first_party_customers,
        "clean_room": engine,
        "protected_query_id": result.query.id,
        "protected_query_status": " -> ".join(result.query.statuses),
        "query_duration_ms": result.query.duration_ms,
    }
    if result.matched_partner_identities is not None and result.partner_identities:
        metadata["partner_match_rate"] = dg.MetadataValue.float(
            round(result.matched_partner_identities / result.partner_identities, 6)
        )
    if result.partner_identities is not None:  # a collaboration member's table is not ours to count
        metadata["partner_identities"] = result.partner_identities
    if result.overlap_query is not None:
        metadata["overlap_query_id"] = result.overlap_query.id
        metadata["overlap_query_duration_ms"] = result.overlap_query.duration_ms
    return metadata
