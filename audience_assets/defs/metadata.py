"""What every step records, shared by the stages: the tenant it works for and its cost (`begin_tenant_step`), the
metadata of a written Parquet file (`dagster/row_count`, `dagster/uri`, `dagster/column_schema`), row
accounting, history tables, and check specs. Counts and reasons only, never values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from audience_assets.core.duck import sql_path
from audience_assets.core.ingestion.read import IngestReport
from audience_assets.core.scratch import Sweep, scratch, sweep
from audience_assets.core.store import Store
from audience_assets.defs.resources import Storage


def check_spec(
    name: str,
    asset: str | dg.AssetKey,
    description: str,
    *,
    blocking: bool = False,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> dg.AssetCheckSpec:
    """A check on `asset`; on a partitioned asset, partitioned the same way, so its history and plots are per
    partition (Dagster 1.13 marks partitioned checks as preview: chosen on purpose, so not warned about)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, blocking=blocking, description=description, partitions_def=partitions_def
        )


@dataclasses.dataclass
class TenantStep:
    """A step working for one tenant: its materialization carries the `tenant` (and `partner` or `audience`) tags,
    every object it writes through `store` carries the tenant as an object tag, and `result` records its cost
    (compute seconds, rows processed, Meta requests, clean-room query time) with the materialization, where
    `tenant_costs` sums it per tenant and day."""

    tags: dict[str, str]
    store: Store  # writes every object with the tenant's tag
    started: float
    swept: Sweep | None = None  # the scratch root at the step's start (dead processes' leftovers removed)

    def result(
        self,
        *,
        metadata: Mapping[str, Any],
        rows: int,
        check_results: list | None = None,
        meta_requests: int = 0,
        clean_room_seconds: float = 0.0,
        asset_key: dg.AssetKey | None = None,
    ) -> dg.MaterializeResult:
        cost = {
            "cost/compute_seconds": dg.MetadataValue.float(round(time.monotonic() - self.started, 3)),
            "cost/rows_processed": int(rows),
            "cost/meta_requests": int(meta_requests),
            "cost/clean_room_query_seconds": dg.MetadataValue.float(round(clean_room_seconds, 3)),
        }
        scratch_figures = self.swept.metadata() if self.swept else {}
        return dg.MaterializeResult(
            asset_key=asset_key,
            metadata={**metadata, **cost, **scratch_figures},
            check_results=check_results or [],
            tags=self.tags,
        )


def begin_tenant_step(
    context: dg.AssetExecutionContext,
    storage: Storage,
    *,
    tenant: str,
    partner: str | None = None,
    audience: str | None = None,
) -> TenantStep:
    """Start a step for `tenant`: tag its run, clear what dead processes left, and start its cost clock."""
    tags = {
        "tenant": tenant,
        **({"partner": partner} if partner else {}),
        **({"audience": audience} if audience else {}),
    }
    context.instance.add_run_tags(context.run.run_id, tags)
    store = storage.store()
    swept = sweep_leftovers(context, store)
    return TenantStep(tags, store.tagged(tenant=tenant), time.monotonic(), swept)


def sweep_leftovers(context: dg.AssetExecutionContext, store: Store) -> Sweep:
    """Remove the scratch folders and partial store files of processes that no longer run (a killed step's),
    saying so; the scratch root as it stands is returned for the step's metadata."""
    swept = sweep()
    if swept.removed:
        context.log.warning(
            f"scratch: removed {swept.removed} folder(s), {swept.removed_bytes:,} bytes, left by processes that "
            "no longer run (a killed step's staged files)"
        )
    partials = store.sweep_partials()
    if partials:
        context.log.warning(f"store: removed {partials} partial file(s) left by writes that never finished")
    return swept


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    """A private scratch folder for one step's files (DuckDB spill, Parquet before upload)."""
    with scratch("step") as folder:
        yield folder


def column_schema(con: duckdb.DuckDBPyConnection, path: Path) -> dg.TableSchema:
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(path)})").fetchall()
    return dg.TableSchema(columns=[dg.TableColumn(name, str(kind)) for name, kind, *_ in described])


def parquet_count(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    return con.execute(f"SELECT count(*) FROM read_parquet({sql_path(path)})").fetchall()[0][0]


def publish(con: duckdb.DuckDBPyConnection, store: Store, path: Path, key: str) -> dict[str, Any]:
    """Upload `path` to `key` and describe it: row count, URI and column schema."""
    rows = parquet_count(con, path)
    store.upload(path, key)
    return {"dagster/row_count": rows, "dagster/uri": store.uri(key), "dagster/column_schema": column_schema(con, path)}


def reasons_table(reasons: Mapping[str, int] | Counter) -> dg.MetadataValue:
    """Quarantine reasons with their row counts as a Markdown table (reasons never quote values)."""
    if not reasons:
        return dg.MetadataValue.md("_no rows quarantined_")
    lines = ["| reason | rows |", "|---|---:|"]
    lines += [f"| {reason} | {n:,} |" for reason, n in Counter(reasons).most_common()]
    return dg.MetadataValue.md("\n".join(lines))


def ingest_metadata(report: IngestReport) -> dict[str, Any]:
    """Row accounting (read = accepted + quarantined) per delivery, and invalid values per key."""
    files = ["| file | read | accepted | quarantined |", "|---|---:|---:|---:|"]
    files += [f"| {f.file} | {f.rows_read:,} | {f.rows_accepted:,} | {f.rows_quarantined:,} |" for f in report.files]
    return {
        "rows_read": report.rows_read,
        "rows_accepted": report.rows_accepted,
        "rows_quarantined": report.rows_quarantined,
        "files": dg.MetadataValue.md("\n".join(files)),
        "quarantine_reasons": reasons_table(report.quarantine_reasons()),
        "invalid_values": dg.MetadataValue.json(report.invalid_summary()),
    }


def history_table(
    context: dg.AssetExecutionContext, current: Mapping[str, Any], keys: tuple[str, ...], limit: int = 10
) -> dg.MetadataValue:
    """This materialization and the previous ones of the same asset (and partition) as a Markdown table:
    how a number moved over time, next to the plot the UI draws from each numeric key."""
    partitions = [context.partition_key] if context.has_partition_key else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=partitions), limit=limit - 1
    ).records

    def cell(value: Any) -> str:
        return (
            f"{value:.2%}"
            if isinstance(value, float) and value <= 1
            else f"{value:,}"
            if isinstance(value, int)
            else str(value)
        )

    lines = [
        "| when (UTC) | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
        "| this run | " + " | ".join(cell(current.get(k, "")) for k in keys) + " |",
    ]
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        when = dt.datetime.fromtimestamp(record.timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M")
        lines.append(f"| {when} | " + " | ".join(cell(metadata[k].value) if k in metadata else "" for k in keys) + " |")
    return dg.MetadataValue.md("\n".join(lines))
