"""aws mode without an AWS account: moto (S3, KMS, SQS, EventBridge, Secrets Manager, Glue, IAM) on 127.0.0.1 and
the Clean Rooms API stand-in (`standins.cleanrooms_api`), a Spark collaboration with the advertiser's membership,
and the project's generated stack applied to them (`standins.cloudformation`) in the deploy command's two passes.
Clients reach them as production does: the real boto3 clients, through `AWS_ENDPOINT_URL` and
`AWS_ENDPOINT_URL_CLEANROOMS`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import boto3

from audience_assets.core.config import ProjectConfig
from audience_assets.infra.stack import build_stack
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
def aws_world(config: ProjectConfig, moto_endpoint: str, name: str) -> Iterator[AwsWorld]:
    """The stand-ins running, the stack applied; the process environment points boto3 at them while open."""
    with CleanRoomsServer() as server, _environ(aws_environment(moto_endpoint, server.url)):
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
        template = build_stack(config)
        parameters = {
            "MembershipId": membership["id"],
            "CodeLocationImage": "audience-assets:test",
            "VpcId": "vpc-0123456789abcdef0",
            "PrivateSubnetIds": ["subnet-0123456789abcdef0"],
            **({} if config.multi_tenant else {"MetaAdAccountId": AD_ACCOUNT}),
        }
        stack = cloudformation.apply(template, name, parameters, region=REGION)
        _moto_as_aws(stack)
        arns = {
            p: stack.attributes[f"Template{p.removeprefix('Arn')}"]["Arn"]
            for p in template["Parameters"]
            if p.startswith("Arn")
        }
        cloudformation.update_rules(stack, {"AllowTemplates": "true", **arns})
        env = {
            "AUDIENCE_ASSETS_ENV": "aws",
            "AUDIENCE_BUCKET": stack.physical["DataBucket"],
            "AUDIENCE_RESULTS_BUCKET": stack.physical["ResultsBucket"],
            "AUDIENCE_KMS_KEY_ID": stack.attributes["ProjectKey"]["Arn"],
            "AUDIENCE_LANDING_QUEUE_URL": stack.physical["LandingQueue"],
            "CLEANROOMS_MEMBERSHIP_ID": membership["id"],
        }
        yield AwsWorld(stack, membership["id"], server.service, env)


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


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
