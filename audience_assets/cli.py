"""`python -m audience_assets run`: the whole pipeline once, headless, on the landing zone's contents (`headless`).

It does what the sensor and automation would do, in dependency order: first-party and suppression data
and the clean-room table, then each partner's data and match, then each audience through to Meta. With
`DAGSTER_HOME` set the runs are recorded in that instance (the UI shows them); otherwise in a throwaway
one. Exit status 0 means every step succeeded. `--accept-delivery SOURCE` overrules a source's delivery
guards for this run, `--approve-removals AUDIENCE` a large removal, `--approve-upload AUDIENCE` an
`approval: manual` audience's upload, `--approve-holdout AUDIENCE` a changed holdout split.
`python -m audience_assets plan [AUDIENCE ...]` builds everything up to the upload plans and prints them, sending
nothing to Meta. `python -m audience_assets demo` seeds the
demo data; `python -m audience_assets templates` prints each partner's analysis templates (for AWS).
`python -m audience_assets stack` prints the deployment's CloudFormation template (`infra.stack`) and
`python -m audience_assets deploy --stack-name NAME --parameter NAME=VALUE ...` creates or updates it on AWS
(`infra.deploy`; deploy/README.md); `python -m audience_assets try-aws` runs the demo in aws mode on local
stand-ins (`try_aws`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from audience_assets.core.audience.approval import APPROVE_HOLDOUT_TAG, APPROVE_REMOVALS_TAG, APPROVE_UPLOAD_TAG
from audience_assets.core.cleanroom import collaboration
from audience_assets.core.config import ProjectConfig, load_config
from audience_assets.core.demo import ensure_demo_data
from audience_assets.core.settings import Settings, dagster_home_set
from audience_assets.defs.ingest.assets import ACCEPT_DELIVERY_TAG
from audience_assets.headless import plan_pipeline, run_pipeline, unknown_names


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


def build_parser() -> argparse.ArgumentParser:
    """The commands and their options (each option's help names the command that takes it)."""
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
        "--approve-holdout",
        action="append",
        default=[],
        metavar="AUDIENCE",
        help="run: let this audience's changed holdout (share or salt) move people between arms",
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
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (exit 2, with usage) options given to a command that does not take them."""
    if args.audiences and args.command != "plan":
        parser.error("audience names are taken by the plan command only")
    if args.command == "deploy" and not args.stack_name:
        parser.error("deploy needs --stack-name")
    if (args.parameter or args.template_bucket or args.stack_name) and args.command != "deploy":
        parser.error("--stack-name, --parameter and --template-bucket are taken by the deploy command only")


def run_tags(args: argparse.Namespace) -> dict[str, str]:
    """The run's tags that overrule a guard: accepted deliveries, approved removals, uploads and holdout changes."""
    return {
        tag: ",".join(values)
        for tag, values in (
            (ACCEPT_DELIVERY_TAG, args.accept_delivery),
            (APPROVE_REMOVALS_TAG, args.approve_removals),
            (APPROVE_UPLOAD_TAG, args.approve_upload),
            (APPROVE_HOLDOUT_TAG, args.approve_holdout),
        )
        if values
    }


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: arguments checked, names in them known to the config, then the command; its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    tags = run_tags(args)
    settings = Settings.from_env()
    problem = unknown_names(
        load_config(settings.config_dir),
        sources=args.accept_delivery,
        audiences=[*args.approve_removals, *args.approve_upload, *args.approve_holdout],
    )
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return run_command(args, settings, tags)


def run_command(args: argparse.Namespace, settings: Settings, tags: dict[str, str]) -> int:
    """Carry out the checked command; its exit status (0 when it succeeded)."""
    if args.command == "templates":
        print_templates(load_config(settings.config_dir))
        return 0
    if args.command == "stack":
        from audience_assets.infra.stack import to_json

        sys.stdout.write(to_json(load_config(settings.config_dir)))
        return 0
    if args.command == "try-aws":
        return try_aws_command()
    if args.command == "deploy":
        return deploy_command(load_config(settings.config_dir), args.stack_name, args.parameter, args.template_bucket)
    if args.command == "demo":
        seeded = ensure_demo_data(settings.data_dir)
        print(f"demo data {'written to' if seeded else 'already present in'} {settings.data_dir / 'landing'}")
        return 0
    with dg.DagsterInstance.get() if dagster_home_set() else dg.DagsterInstance.ephemeral() as instance:
        if args.command == "plan":
            return 0 if plan_pipeline(settings, instance, args.audiences, verbose=args.verbose) else 1
        return 0 if run_pipeline(settings, instance, tags=tags, verbose=args.verbose) else 1


def try_aws_command() -> int:
    """The demo in aws mode on local stand-ins, in a fresh folder that is kept for a look afterwards."""
    import tempfile

    from audience_assets.try_aws import try_aws

    work = Path(tempfile.mkdtemp(prefix="audience-assets-aws-"))
    ok = try_aws(work, sys.stdout)
    print(f"\n{'done' if ok else 'FAILED'}; its files are under {work}")
    return 0 if ok else 1
