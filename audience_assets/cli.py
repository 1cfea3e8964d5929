"""`python -m audience_assets run`: the whole pipeline once, headless, on the landing zone's contents.

It does what the sensor and automation would do, in dependency order: first-party and suppression data
and the clean-room table, then each partner's data and match, then each audience through to Meta. With
`DAGSTER_HOME` set the runs are recorded in that instance (the UI shows them); otherwise in a throwaway
one. Exit status 0 means every step succeeded. `python -m audience_assets demo` seeds the demo data;
`python -m audience_assets templates` prints each partner's analysis templates (to create them on AWS).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import dagster as dg

from audience_assets.core.cleanroom import collaboration
from audience_assets.core.config import ProjectConfig, load_config
from audience_assets.core.demo import ensure_demo_data
from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions

STAGES = (  # (asset keys, partitioned by)
    (["first_party_customers", "suppression_list", "clean_room_first_party_table"], None),
    (["partner_data", "clean_room_matches"], "partner"),
    (["audience_members", "audience_chunks", "meta_custom_audience"], "audience"),
    (["tenant_costs"], None),
)


def run_pipeline(
    settings: Settings,
    instance: dg.DagsterInstance,
    out=sys.stdout,
    resources: dict[str, dg.ConfigurableResource] | None = None,
) -> bool:
    """Materialize everything once; `resources` replaces some of the environment's (tests, stand-ins)."""
    config = load_config(settings.config_dir)
    if settings.env == "local" and settings.demo_data:
        ensure_demo_data(settings.data_dir)
    defs = build_definitions(settings)
    assets, resources = list(defs.assets or []), {**(defs.resources or {}), **(resources or {})}
    ok = True
    for keys, partitioned_by in STAGES:
        if partitioned_by == "audience":  # each tenant's audiences, under its key prefix once tenants are declared
            batches = [
                ([f"{tenant}/{k}" if config.multi_tenant else k for k in keys], config.audiences_of(tenant))
                for tenant in config.tenant_names
            ]
        else:
            batches = [(keys, sorted(config.partners) if partitioned_by == "partner" else [None])]
        for selection, partition in ((selection, p) for selection, partitions in batches for p in partitions):
            result = dg.materialize(
                assets,
                selection=selection,
                partition_key=partition,
                resources=resources,
                instance=instance,
                raise_on_error=False,
                tags={"audience_assets/trigger": "headless"},
            )
            label = ", ".join(selection) + (f" [{partition}]" if partition else "")
            print(f"{'ok    ' if result.success else 'FAILED'} {label} (run {result.run_id})", file=out)
            for event in result.get_asset_materialization_events():
                materialization = event.materialization
                rows = materialization.metadata.get("dagster/row_count")
                print(
                    f"         {materialization.asset_key.to_user_string()}: {rows.value if rows else '-'} rows",
                    file=out,
                )
            if not result.success:
                for event in result.all_events:
                    if event.is_step_failure:
                        error = event.step_failure_data.error
                        while error.cause is not None and "DagsterExecutionStepExecutionError" in error.cls_name:
                            error = error.cause  # the step's own exception, not Dagster's wrapper
                        message = " ".join(line.strip() for line in error.message.splitlines() if line.strip())
                        print(f"         {event.step_key}: {error.cls_name}: {message[:500]}", file=out)
            ok &= result.success
    return ok


def print_templates(config: ProjectConfig, out=None) -> None:
    """Each partner's analysis templates as they run: the text to create in the AWS Clean Rooms collaboration."""
    out = out or sys.stdout
    for partner, contract in sorted(config.partners.items()):
        rule = collaboration.partner_rule(contract.clean_room.analysis_rule, partner)
        for name, sql in collaboration.analyses(
            partner, contract.match_keys, contract.clean_room.match_on, rule.kind
        ).items():
            print(
                f"-- {name} for {partner} (table {partner}; the advertiser's table is first_party)\n{sql};\n", file=out
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audience_assets", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "demo", "templates"], nargs="?", default="run")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "templates":
        print_templates(load_config(settings.config_dir))
        return 0
    if args.command == "demo":
        seeded = ensure_demo_data(settings.data_dir)
        print(f"demo data {'written to' if seeded else 'already present in'} {settings.data_dir / 'landing'}")
        return 0
    with dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral() as instance:
        return 0 if run_pipeline(settings, instance) else 1
