"""Reporting: what each tenant's audiences cost, per day, from the cost every step records.

Each step's materialization carries its tenant (tag) and its cost (`cost/*` metadata: compute seconds,
rows processed, Meta requests, clean-room query seconds); `tenant_costs` sums them per tenant and UTC day
over the last 31 days, shows the sums as a table in the UI and writes them to `reports/tenant_costs.csv`.
Failed steps record nothing: the report counts work that produced a materialization.
"""

import csv
import datetime as dt
import io
from collections import defaultdict

import dagster as dg

from audience_assets.core import layout
from audience_assets.core.config import ProjectConfig
from audience_assets.defs.metadata import begin_tenant_step
from audience_assets.defs.resources import Storage

GROUP = "reporting"
WINDOW_DAYS = 31
COSTS = ("cost/compute_seconds", "cost/rows_processed", "cost/meta_requests", "cost/clean_room_query_seconds")
COLUMNS = ("tenant", "day", "runs", "compute_seconds", "rows_processed", "meta_requests", "clean_room_query_seconds")


def cost_rows(instance: dg.DagsterInstance, asset_keys: list[dg.AssetKey], since: dt.datetime) -> list[dict]:
    """Per tenant and UTC day: distinct runs and the sum of every step's recorded cost."""
    totals: dict[tuple[str, str], dict] = defaultdict(lambda: {"runs": set(), **{c: 0.0 for c in COSTS}})
    for key in asset_keys:
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_timestamp=since.timestamp()), limit=1000, cursor=cursor
            )
            for record in page.records:
                event = record.asset_materialization
                if event is None or "cost/compute_seconds" not in event.metadata:
                    continue
                day = dt.datetime.fromtimestamp(record.timestamp, dt.UTC).date().isoformat()
                bucket = totals[((event.tags or {}).get("tenant", "unattributed"), day)]
                bucket["runs"].add(record.run_id)
                for name in COSTS:
                    bucket[name] += float(event.metadata[name].value) if name in event.metadata else 0.0
            if not page.has_more:
                break
            cursor = page.cursor
    return [
        {
            "tenant": tenant,
            "day": day,
            "runs": len(t["runs"]),
            "compute_seconds": round(t["cost/compute_seconds"], 3),
            "rows_processed": int(t["cost/rows_processed"]),
            "meta_requests": int(t["cost/meta_requests"]),
            "clean_room_query_seconds": round(t["cost/clean_room_query_seconds"], 3),
        }
        for (tenant, day), t in sorted(totals.items())
    ]


def build_reporting_assets(config: ProjectConfig, keys: list[dg.AssetKey]) -> list[dg.AssetsDefinition]:
    """`tenant_costs`, summing the cost recorded by the assets `keys`."""

    @dg.asset(
        group_name=GROUP,
        kinds={"csv"},
        deps=keys,
        automation_condition=dg.AutomationCondition.cron_tick_passed("0 7 * * *", cron_timezone="UTC")
        & ~dg.AutomationCondition.in_progress(),
    )
    def tenant_costs(context: dg.AssetExecutionContext, storage: Storage) -> dg.MaterializeResult:
        """Cost per tenant and day (last 31 days): runs, compute seconds, rows processed, Meta requests and
        clean-room query seconds, summed from what every step recorded."""
        step = begin_tenant_step(context, storage, tenant=config.deployment_tenant)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=WINDOW_DAYS)
        rows = cost_rows(context.instance, keys, since)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        step.store.put_bytes(layout.TENANT_COSTS, text.getvalue().encode())
        schema = dg.TableSchema(
            columns=[dg.TableColumn(c, "string" if c in ("tenant", "day") else "float") for c in COLUMNS]
        )
        return step.result(
            rows=len(rows),
            metadata={
                "dagster/row_count": len(rows),
                "dagster/uri": step.store.uri(layout.TENANT_COSTS),
                "costs": dg.MetadataValue.table([dg.TableRecord(row) for row in rows], schema=schema),
                "tenants": ", ".join(sorted({r["tenant"] for r in rows})),
            },
        )

    return [tenant_costs]
