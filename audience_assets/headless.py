"""The whole pipeline once, headless, as the sensor and automation would run it: every asset in dependency order
on the landing zone's current contents (`run_pipeline`), or everything up to the upload plans (`plan_pipeline`).
The commands of `cli` and `try_aws` drive it; it prints one line per step and the steps' own log lines."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import dagster as dg

from audience_assets.core.audience.approval import TRIGGER_TAG
from audience_assets.core.audience.holdout import recorded_spec
from audience_assets.core.audience.plan import load_plan
from audience_assets.core.audience.review import describe, learned_rate, lookalike_lines, value_lines
from audience_assets.core.config import ProjectConfig, load_config
from audience_assets.core.demo import ensure_demo_data
from audience_assets.core.ingestion.inventory import ignored_objects
from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions
from audience_assets.defs.operations.dead_runs import fail_dead_runs, runner_tag
from audience_assets.defs.resources import build_resources

STAGES = (  # (asset keys, partitioned by)
    (["landing_zone_report", "first_party_customers", "suppression_list", "clean_room_first_party_table"], None),
    (["partner_data", "clean_room_matches"], "partner"),
    (["audience_members", "audience_holdout", "audience_chunks", "meta_custom_audience"], "audience"),
    (["meta_lookalike_audience"], "lookalike"),
    (["tenant_costs"], None),
)
PLAN_STAGES = (*STAGES[:2], (STAGES[2][0][:-1], "audience"))  # everything but Meta (the audience stage's last)
# The console logger at INFO: the steps' own lines and Dagster's warnings and errors, without its DEBUG events
# (RESOURCE_INIT_STARTED, STEP_OUTPUT "... (Type check passed)", ...), which the instance still records.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_pipeline(
    settings: Settings,
    instance: dg.DagsterInstance,
    out=sys.stdout,
    resources: dict[str, dg.ConfigurableResource] | None = None,
    tags: dict[str, str] | None = None,
    stages=STAGES,
    audiences: Sequence[str] | None = None,
    verbose: bool = False,
) -> bool:
    """Materialize everything once; `resources` replaces some of the environment's (tests, stand-ins), `tags`
    go on every run (accepting a delivery, approving removals). The terminal gets this command's lines and the
    steps' own log lines (progress of long uploads, what was held and why), not Dagster's event stream, which the
    instance records whole for the UI; `verbose` prints that stream too."""
    config = load_config(settings.config_dir)
    if settings.env == "local" and settings.demo_data:
        ensure_demo_data(settings.data_dir)
    defs = build_definitions(settings)
    assets = [*(defs.assets or []), *(defs.asset_checks or [])]
    resources = {**(defs.resources or {}), **(resources or {})}
    store = resources["storage"].process_config_and_initialize().store()  # EnvVar fields resolved, as in a run
    for run_id in fail_dead_runs(instance):
        print(f"FAILED run {run_id}: left STARTED by a process that no longer runs (now marked failed)", file=out)
    ok = True
    ingesting = [i for i, (keys, _) in enumerate(stages) if {"first_party_customers", "partner_data"} & set(keys)]
    for number, (keys, partitioned_by) in enumerate(stages):
        for selection, partition in stage_runs(config, keys, partitioned_by, audiences):
            result = dg.materialize(
                assets,
                selection=selection,
                partition_key=partition,
                resources=resources,
                instance=instance,
                raise_on_error=False,
                tags={TRIGGER_TAG: "headless", **runner_tag(), **(tags or {})},
                run_config=None if verbose else QUIET,
            )
            print_run(result, selection, partition, out)
            ok &= result.success
        if ingesting and number == ingesting[-1]:  # every source ingested: what the landing zone holds that none reads
            for item in ignored_objects(store, config):
                print(f"not read: {item.key} ({item.size:,} bytes): {item.reason}", file=out)
    return ok


def stage_runs(
    config: ProjectConfig, keys: list[str], partitioned_by: str | None, audiences: Sequence[str] | None
) -> list[tuple[list[str], str | None]]:
    """A stage's runs, as (asset selection, partition): one per partner, one per audience (each tenant's under its
    key prefix once tenants are declared, only the `audiences` chosen), one per lookalike of those audiences, or one
    unpartitioned."""
    if partitioned_by in ("audience", "lookalike"):  # per tenant, under its key prefix once tenants are declared
        partitions = {
            tenant: config.lookalikes_of(tenant)
            if partitioned_by == "lookalike"
            else {a: [a] for a in config.audiences_of(tenant)}
            for tenant in config.tenant_names
        }
        batches = [
            (
                [f"{tenant}/{k}" if config.multi_tenant else k for k in keys],
                [p for a, keys_of in of.items() if audiences is None or a in audiences for p in keys_of],
            )
            for tenant, of in partitions.items()
        ]
    else:
        batches = [(keys, sorted(config.partners) if partitioned_by == "partner" else [None])]
    return [(selection, p) for selection, partitions in batches for p in partitions]


def print_run(result: dg.ExecuteInProcessResult, selection: list[str], partition: str | None, out) -> None:
    """One line per run (ok or FAILED), the rows each asset materialized, and for a failure why."""
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
        print_failures(result, out)


def print_failures(result: dg.ExecuteInProcessResult, out) -> None:
    """What failed a run: each failed check with its description, each failed step with its own exception."""
    for event in result.all_events:
        is_check = event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        evaluation = event.asset_check_evaluation_data if is_check else None
        if evaluation is not None and not evaluation.passed and evaluation.description:
            print(f"         check {evaluation.check_name}: {evaluation.description}", file=out)
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error.cause is not None and "DagsterExecutionStepExecutionError" in error.cls_name:
                error = error.cause  # the step's own exception, not Dagster's wrapper
            message = " ".join(line.strip() for line in error.message.splitlines() if line.strip())
            print(f"         {event.step_key}: {error.cls_name}: {message[:500]}", file=out)


def unknown_names(config: ProjectConfig, **named: Sequence[str]) -> str | None:
    """What a command line names that the configuration does not declare (a typo would otherwise approve or
    accept nothing, silently): `audiences` (each may be pinned to a plan, `name@<upload id>`) or `sources`."""
    declared = {
        "audiences": sorted(config.audiences),
        "sources": sorted([*config.partners, "first_party", "suppression"]),
    }
    for kind, names in named.items():
        unknown = sorted({n.partition("@")[0] for n in names} - set(declared[kind]))
        if unknown:
            return (
                f"unknown {kind[:-1]}(s) {', '.join(unknown)}; the configuration declares {', '.join(declared[kind])}"
            )
    return None


def plan_pipeline(
    settings: Settings,
    instance: dg.DagsterInstance,
    audiences: Sequence[str] = (),
    out=sys.stdout,
    resources: dict[str, dg.ConfigurableResource] | None = None,
    verbose: bool = False,
) -> bool:
    """Build everything up to the upload plans (nothing goes to Meta) and print each audience's plan."""
    config = load_config(settings.config_dir)
    problem = unknown_names(config, audiences=audiences)
    if problem:
        print(problem, file=out)
        return False
    chosen = list(audiences) or list(config.audiences)
    ok = run_pipeline(settings, instance, out, resources, stages=PLAN_STAGES, audiences=chosen, verbose=verbose)
    store = build_resources(settings, config)["storage"].process_config_and_initialize().store()
    rate = learned_rate(store)
    print("\nupload plans (nothing was sent to Meta):", file=out)
    for name in chosen:
        problems = latest_check_metadata(instance, config, name, "audience_chunks", "hashed_cells")
        bad = {k.removeprefix("bad_"): int(v) for k, v in problems.items() if k.startswith("bad_")}
        arms = latest_metadata(instance, config, name, "audience_members")
        figures = {k.removeprefix("holdout/"): v for k, v in arms.items() if k.startswith("holdout/")}
        holdout = (recorded_spec(store, name)[1], figures)
        audience = config.audiences[name]
        chunks = latest_metadata(instance, config, name, "audience_chunks")
        more = [*value_lines(audience, chunks), *lookalike_lines(store, name, audience)]
        for line in describe(name, audience, load_plan(store, name), rate, bad, holdout, more):
            print(line, file=out)
    return ok


def latest_metadata(instance: dg.DagsterInstance, config: ProjectConfig, audience: str, asset: str) -> dict:
    """The metadata of an asset's latest materialization for one audience (empty when it has none)."""
    prefix = [config.tenant_of_audience(audience)] if config.multi_tenant else []
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([*prefix, asset]), asset_partitions=[audience]), limit=1
    ).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()} if records else {}


def latest_check_metadata(
    instance: dg.DagsterInstance, config: ProjectConfig, audience: str, asset: str, check: str
) -> dict[str, object]:
    """The metadata of a check's latest evaluation for one audience (empty when it has none)."""
    prefix = [config.tenant_of_audience(audience)] if config.multi_tenant else []
    key = dg.AssetCheckKey(dg.AssetKey([*prefix, asset]), check)
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    for record in records:  # planned (or skipped) executions have no evaluation
        event = record.event.dagster_event if record.event else None
        if event is None or event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        evaluation = event.asset_check_evaluation_data
        if evaluation.partition == audience:
            return {k: v.value for k, v in evaluation.metadata.items()}
    return {}
