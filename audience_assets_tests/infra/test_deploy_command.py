"""The deploy command (`infra.deploy`) through the CloudFormation API: its two passes create the stack that the
end-to-end test runs on (aws_world deploys with it); here what an operator meets besides: parameters it lacks,
a redeploy that changes nothing, a template too large for a request body, a stack that failed to create."""

from __future__ import annotations

import io

import boto3
import pytest

from audience_assets.cli import main
from audience_assets.core.config import load_config
from audience_assets.infra import deploy as deploying
from audience_assets.infra.deploy import DeployError, deploy
from audience_assets.standins.aws import aws_world
from audience_assets.standins.cloudformation import CloudFormationClient


def test_missing_and_unknown_parameters_are_named_before_anything_is_called():
    stand_in = CloudFormationClient()
    with pytest.raises(DeployError) as missing:
        deploy(load_config(), "aa", {"VpcId": "vpc-1"}, cloudformation=stand_in, out=io.StringIO())
    named = str(missing.value)
    assert "MembershipId: The AWS Clean Rooms membership" in named and "VpcId" not in named
    with pytest.raises(DeployError, match="no parameter Colour"):
        given = {"MembershipId": "m", "CodeLocationImage": "i", "VpcId": "v", "PrivateSubnetIds": "s"}
        deploy(load_config(), "aa", {**given, "MetaAdAccountId": "act_1", "Colour": "red"}, cloudformation=stand_in)
    assert stand_in.calls == []
    assert main(["deploy", "--stack-name", "aa", "--parameter", "VpcId"]) == 2  # NAME=VALUE, or a clear no


def test_a_redeploy_changes_nothing_and_a_large_template_goes_through_s3(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
):
    config = load_config()
    with aws_world(config, moto_endpoint, "aa-redeploy") as aws:
        again = deploy(config, "aa-redeploy", aws.parameters, cloudformation=aws.cloudformation, out=io.StringIO())
        assert again.passes == 0 and again.outputs["DataBucket"] == aws.env["AUDIENCE_BUCKET"]

        monkeypatch.setattr(deploying, "BODY_LIMIT", 1_000)
        with pytest.raises(DeployError, match="--template-bucket"):
            deploy(config, "aa-redeploy", aws.parameters, cloudformation=aws.cloudformation, out=io.StringIO())
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="operator-templates")
        through_s3 = deploy(
            config,
            "aa-redeploy",
            aws.parameters,
            cloudformation=aws.cloudformation,
            template_bucket="operator-templates",
            out=io.StringIO(),
        )
        assert through_s3.passes == 0 and aws.cloudformation.calls[-2:] == ["UpdateStack", "DescribeStacks"]
        head = s3.head_object(Bucket="operator-templates", Key="audience_assets/aa-redeploy.json")
        assert head["ServerSideEncryption"] == "aws:kms"

        aws.cloudformation.status["aa-redeploy"] = "ROLLBACK_COMPLETE"
        with pytest.raises(DeployError, match="delete it, deploy again"):
            deploy(config, "aa-redeploy", aws.parameters, cloudformation=aws.cloudformation, out=io.StringIO())
