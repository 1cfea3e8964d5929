"""`python -m audience_assets run`: the whole pipeline once, headless, on the landing zone's contents.

It does what the sensor and automation would do, in dependency order: first-party and suppression data
and the clean-room table, then each partner's data and match, then each audience through to Meta. With
`DAGSTER_HOME` set the runs are recorded in that instance (the UI shows them); otherwise in a throwaway
one. Exit status 0 means every step succeeded. `--accept-delivery SOURCE` overrules a source's delivery
guards for this run, `--approve-removals AUDIENCE` a large removal, `--approve-upload AUDIENCE` an
`approval: manual` audience's upload. `python -m audience_assets plan [AUDIENCE ...]` builds everything up
to the upload plans and prints them, sending nothing to Meta. `python -m audience_assets demo` seeds the
demo data; `python -m audience_assets templates` prints each partner's analysis templates (for AWS).
`python -m audience_assets stack` prints the deployment's CloudFormation template (`infra.stack`) and
`python -m audience_assets deploy --stack-name NAME --parameter NAME=VALUE ...` creates or updates it on AWS
(`infra.deploy`; deploy/README.md); `python -m audience_assets try-aws` runs the demo in aws mode on local
stand-ins (`try_aws`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from audience_assets.core.audience.approval import APPROVE_REMOVALS_TAG, APPROVE_UPLOAD_TAG
from audience_assets.core.audience.plan import load_plan
from audience_assets.core.audience.review import describe, learned_rate
from audience_assets.core.cleanroom import collaboration
from audience_assets.core.config import ProjectConfig, load_config
from audience_assets.core.demo import ensure_demo_data
from audience_assets.core.ingestion.inventory import ignored_objects
from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions
from audience_assets.defs.ingest.assets import ACCEPT_DELIVERY_TAG
from audience_assets.defs.operations.dead_runs import fail_dead_runs, runner_tag
from audience_assets.defs.resources import build_resources

STAGES = (  # (asset keys, partitioned by)
    (["landing_zone_report", "first_party_customers", "suppression_list", "clean_room_first_party_table"], None),
    (["partner_data", "clean_room_matches"], "partner"),
    (["audience_members", "audience_chunks", "meta_custom_audience"], "audience"),
    (["tenant_costs"], None),
)
PLAN_STAGES = (*STAGES[:2], (["audience_members", "audience_chunks"], "audience"))  # everything but Meta
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
        if partitioned_by == "audience":  # each tenant's audiences, under its key prefix once tenants are declared
            batches = [
                (
                    [f"{tenant}/{k}" if config.multi_tenant else k for k in keys],
                    [a for a in config.audiences_of(tenant) if audiences is None or a in audiences],
                )
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
                tags={"audience_assets/trigger": "headless", **runner_tag(), **(tags or {})},
                run_config=None if verbose else QUIET,
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
            ok &= result.success
        if ingesting and number == ingesting[-1]:  # every source ingested: what the landing zone holds that none reads
            for item in ignored_objects(store, config):
                print(f"not read: {item.key} ({item.size:,} bytes): {item.reason}", file=out)
    return ok


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
        for line in describe(name, config.audiences[name], load_plan(store, name), rate, bad):
            print(line, file=out)
    return ok


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


def deploy_command(config: ProjectConfig, stack_name: str, pairs: Sequence[str], template_bucket: str | None) -> int:
    """Deploy the stack and print what to do next; 2 for a mistake in the command, 1 when AWS refused."""
    from audience_assets.infra.deploy import DeployError, deploy

    malformed = [p for p in pairs if "=" not in p]
    if malformed:
        print(f"--parameter takes NAME=VALUE: {', '.join(malformed)}", file=sys.stderr)
        return 2
    parameters = dict(p.split("=", 1) for p in pairs)
    try:
        deployed = deploy(config, stack_name, parameters, template_bucket=template_bucket)
    except DeployError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{stack_name}: deployed ({deployed.passes} change(s)); outputs:")
    for name, value in sorted(deployed.outputs.items()):
        print(f"  {name} = {value}")
    for name, value in sorted(deployed.outputs.items()):
        if name.startswith("MetaToken"):
            print(f"next, once: aws secretsmanager put-secret-value --secret-id {value} --secret-string TOKEN")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audience_assets", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command",
        choices=["run", "plan", "demo", "templates", "stack", "deploy", "try-aws"],
        nargs="?",
        default="run",
    )
    parser.add_argument("audiences", nargs="*", metavar="AUDIENCE", help="plan: the audiences to plan (default all)")
    parser.add_argument(
        "--accept-delivery",
        action="append",
        default=[],
        metavar="SOURCE",
        help="run: publish this source's delivery although its guards would hold it (a partner, "
        "first_party or suppression)",
    )
    parser.add_argument(
        "--approve-removals",
        action="append",
        default=[],
        metavar="AUDIENCE",
        help="run: let this audience's sync remove more than its max_removal",
    )
    parser.add_argument(
        "--approve-upload",
        action="append",
        default=[],
        metavar="AUDIENCE",
        help="run: upload this approval: manual audience",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="run, plan: print Dagster's whole event stream (DEBUG) too"
    )
    parser.add_argument("--stack-name", help="deploy: the CloudFormation stack (one per deployment and region)")
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="deploy: a stack parameter (MembershipId, CodeLocationImage, VpcId, PrivateSubnetIds as a,b, ...)",
    )
    parser.add_argument(
        "--template-bucket", help="deploy: an existing bucket to pass a template over 51,200 bytes through"
    )
    args = parser.parse_args(argv)
    if args.audiences and args.command != "plan":
        parser.error("audience names are taken by the plan command only")
    if args.command == "deploy" and not args.stack_name:
        parser.error("deploy needs --stack-name")
    if (args.parameter or args.template_bucket or args.stack_name) and args.command != "deploy":
        parser.error("--stack-name, --parameter and --template-bucket are taken by the deploy command only")
    tags = {
        tag: ",".join(values)
        for tag, values in (
            (ACCEPT_DELIVERY_TAG, args.accept_delivery),
            (APPROVE_REMOVALS_TAG, args.approve_removals),
            (APPROVE_UPLOAD_TAG, args.approve_upload),
        )
        if values
    }
    settings = Settings.from_env()
    problem = unknown_names(
        load_config(settings.config_dir),
        sources=args.accept_delivery,
        audiences=[*args.approve_removals, *args.approve_upload],
    )
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.command == "templates":
        print_templates(load_config(settings.config_dir))
        return 0
    if args.command == "stack":
        from audience_assets.infra.stack import to_json

        sys.stdout.write(to_json(load_config(settings.config_dir)))
        return 0
    if args.command == "try-aws":
        import tempfile

        from audience_assets.try_aws import try_aws

        work = Path(tempfile.mkdtemp(prefix="audience-assets-aws-"))
        ok = try_aws(work, sys.stdout)
        print(f"\n{'done' if ok else 'FAILED'}; its files are under {work}")
        return 0 if ok else 1
    if args.command == "deploy":
        return deploy_command(load_config(settings.config_dir), args.stack_name, args.parameter, args.template_bucket)
    if args.command == "demo":
        seeded = ensure_demo_data(settings.data_dir)
        print(f"demo data {'written to' if seeded else 'already present in'} {settings.data_dir / 'landing'}")
        return 0
    with dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral() as instance:
        if args.command == "plan":
            return 0 if plan_pipeline(settings, instance, args.audiences, verbose=args.verbose) else 1
        return 0 if run_pipeline(settings, instance, tags=tags, verbose=args.verbose) else 1
