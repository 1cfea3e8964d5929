"""aws mode without an AWS account: moto (S3, KMS, SQS, EventBridge, Secrets Manager, Glue, IAM) on 127.0.0.1 and
the Clean Rooms API stand-in (`standins.cleanrooms_api`), a Spark collaboration with the advertiser's membership,
and the project's generated stack deployed to them by the deploy command (`infra.deploy`, its two passes) through
the CloudFormation stand-in (`standins.cloudformation`).
Clients reach them as production does: the real boto3 clients, through `AWS_ENDPOINT_URL` and
`AWS_ENDPOINT_URL_CLEANROOMS`."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3

from audience_assets.core.cleanroom.collaboration import TEMPLATES, partner_policy
from audience_assets.core.cleanroom.tables import COLUMN_TYPES, PARTNER_COLUMNS
from audience_assets.core.config import ProjectConfig
from audience_assets.core.settings import environment
from audience_assets.infra.cfn import logical
from audience_assets.infra.deploy import deploy, template_arn_parameters
from audience_assets.infra.stack import GLUE_TYPES, build_stack
from audience_assets.standins import cloudformation
from audience_assets.standins.cleanrooms_api import CleanRoomsServer

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
PARTNER_ACCOUNT = "210987654321"
AD_ACCOUNT = "act_1000000001"  # the Meta sandbox's


@dataclasses.dataclass
class AwsWorld:
    stack: cloudformation.Stack
    membership_id: str
    clean_rooms: Any  # the stand-in's state (its `calls`, its queries)
    env: dict[str, str]  # what a deployment's tasks get (the stack's outputs as the project's variables)
    cloudformation: cloudformation.CloudFormationClient  # what deployed it
    parameters: dict[str, str]  # the operator's, as given to the deploy command

    def output(self, logical: str) -> Any:
        return self.stack.physical[logical]

    @property
    def data_bucket(self) -> str:
        return self.stack.physical["DataBucket"]

    @property
    def results_bucket(self) -> str:
        return self.stack.physical["ResultsBucket"]

    @property
    def key_arn(self) -> str:
        return self.stack.attributes["ProjectKey"]["Arn"]


def aws_environment(moto_endpoint: str, clean_rooms_url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ENDPOINT_URL_CLEANROOMS": clean_rooms_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


@contextlib.contextmanager
def aws_world(
    config: ProjectConfig, moto_endpoint: str, name: str, members: Mapping[str, Path] | None = None
) -> Iterator[AwsWorld]:
    """The stand-ins running, the stack applied; the process environment points boto3 at them while open.
    `members`: partners that are collaboration members (`clean_room.member`), each with the Parquet table it
    associates from its own account."""
    with CleanRoomsServer() as server, environment(aws_environment(moto_endpoint, server.url)):
        clean_rooms = boto3.client("cleanrooms", region_name=REGION)
        collaboration = clean_rooms.create_collaboration(
            name=f"{name} collaboration",
            creatorDisplayName="advertiser",
            creatorMemberAbilities=["CAN_QUERY", "CAN_RECEIVE_RESULTS"],
            members=[{"accountId": PARTNER_ACCOUNT, "memberAbilities": [], "displayName": "partner"}],
            queryLogStatus="DISABLED",
            analyticsEngine="SPARK",
        )["collaboration"]
        membership = clean_rooms.create_membership(
            collaborationIdentifier=collaboration["id"], queryLogStatus="DISABLED"
        )["membership"]
        as_partner = boto3.client(
            "cleanrooms", region_name=REGION, aws_access_key_id=PARTNER_ACCOUNT, aws_secret_access_key="partner"
        )
        member_tables = {
            partner: _associate_from_the_partners_account(as_partner, collaboration["id"], partner, table)
            for partner, table in (members or {}).items()
        }
        template = build_stack(config)
        parameters = {
            "MembershipId": membership["id"],
            "CodeLocationImage": "audience-assets:test",
            "VpcId": "vpc-0123456789abcdef0",
            "PrivateSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
            **({} if config.multi_tenant else {"MetaAdAccountId": AD_ACCOUNT}),
        }
        stand_in = cloudformation.CloudFormationClient(REGION)
        deployed = deploy(config, name, parameters, cloudformation=stand_in, out=io.StringIO())
        stack = stand_in.stacks[name]
        _moto_as_aws(stack)
        arns = template_arn_parameters(template, deployed.outputs)
        for partner, table_id in member_tables.items():  # the partner allows this project's templates by ARN
            as_partner.update_configured_table_analysis_rule(
                configuredTableIdentifier=table_id,
                analysisRuleType="CUSTOM",
                analysisRulePolicy={
                    "v1": _member_policy(partner, [arns[f"Arn{logical(t, partner)}"] for t in TEMPLATES])
                },
            )
        assert deployed.passes == 2 and stand_in.calls.count("UpdateStack") == 1
        outputs = deployed.outputs
        env = {  # what the deploy command reports, as the task definitions set it
            "AUDIENCE_ASSETS_ENV": "aws",
            "AUDIENCE_BUCKET": outputs["DataBucket"],
            "AUDIENCE_RESULTS_BUCKET": outputs["ResultsBucket"],
            "AUDIENCE_KMS_KEY_ID": outputs["ProjectKeyArn"],
            "AUDIENCE_LANDING_QUEUE_URL": outputs["LandingQueueUrl"],
            "CLEANROOMS_MEMBERSHIP_ID": membership["id"],
        }
        yield AwsWorld(stack, membership["id"], server.service, env, stand_in, parameters)


def _member_policy(partner: str, allowed: list[str]) -> dict[str, Any]:
    custom = partner_policy(None)["custom"]
    return {"custom": {**custom, "allowedAnalyses": allowed}}


def _associate_from_the_partners_account(client: Any, collaboration_id: str, partner: str, table: Path) -> str:
    """What a member partner does in its own account: its table in its bucket and Glue catalog, configured with a
    rule that allows nothing yet, associated under its name (which the templates read); returns the table's id."""
    bucket, database = f"{partner.replace('_', '-')}-own-data", f"{partner}_own"
    boto3.client("s3").create_bucket(Bucket=bucket)
    boto3.client("s3").upload_file(str(table), bucket, "table/data.parquet")
    glue = boto3.client("glue")
    glue.create_database(DatabaseInput={"Name": database})
    glue.create_table(
        DatabaseName=database,
        TableInput={
            "Name": partner,
            "StorageDescriptor": {
                "Location": f"s3://{bucket}/table/",
                "Columns": [{"Name": c, "Type": GLUE_TYPES[COLUMN_TYPES[c]]} for c in PARTNER_COLUMNS],
            },
        },
    )
    membership = client.create_membership(collaborationIdentifier=collaboration_id, queryLogStatus="DISABLED")
    configured = client.create_configured_table(
        name=partner,
        tableReference={"glue": {"databaseName": database, "tableName": partner}},
        allowedColumns=list(PARTNER_COLUMNS),
        analysisMethod="DIRECT_QUERY",
    )["configuredTable"]
    client.create_configured_table_analysis_rule(
        configuredTableIdentifier=configured["id"],
        analysisRuleType="CUSTOM",
        analysisRulePolicy={"v1": _member_policy(partner, [])},
    )
    client.create_configured_table_association(
        name=partner,
        membershipIdentifier=membership["membership"]["id"],
        configuredTableIdentifier=configured["id"],
        roleArn=f"arn:aws:iam::{PARTNER_ACCOUNT}:role/{partner}-clean-rooms-reads",
    )
    return configured["id"]


def _moto_as_aws(stack: cloudformation.Stack) -> None:
    """Two places where moto (5.2) differs from AWS on the stack's event wiring, set right in its backends (the
    server runs in this process):
    - S3 turns EventBridge notifications on with an empty `<EventBridgeConfiguration/>` element (what boto3 sends
      for the stack's `EventBridgeEnabled: true`); moto reads the empty element as absent;
    - moto hands S3's events to the archive's internal rule first, which raises on them (it looks for an
      `archive-arn` only replayed events carry) and, the error swallowed, no other rule gets the event. The
      archive's rule is dropped: the test does not replay."""
    from moto.events.models import events_backends
    from moto.s3.models import s3_backends

    s3_backends[ACCOUNT]["aws"].buckets[stack.physical["DataBucket"]].notification_configuration.event_bridge = {}
    rules = events_backends[ACCOUNT][REGION].event_buses["default"].rules
    for name in [n for n in rules if n.startswith("Events-Archive-")]:
        del rules[name]
