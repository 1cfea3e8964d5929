"""`python -m audience_assets deploy`: the generated stack (`infra.stack`) created or updated through the
CloudFormation API, in two passes.

An analysis rule allows templates by ARN, and a template can be created only once the tables it reads are
associated; so the first pass creates everything with rules that allow only the templates whose ARN is already
known (none, on a create), and the second passes the templates' ARNs, read from the first pass's outputs, back in
as parameters. An update keeps every parameter it is not given at its previous value (the ARNs too, so the
templates that exist stay allowed; a partner added starts empty) and makes the second pass only when an ARN
changed: a new partner's templates, or a template replaced because its SQL changed (between the passes, the
rules still name the replaced template: its partner's queries fail until the second pass ends).

The template goes as a body when it fits CloudFormation's 51,200 bytes, else through S3 (`template_bucket`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import boto3
from botocore.exceptions import ClientError

from audience_assets.core.config import ProjectConfig
from audience_assets.infra.stack import build_stack

BODY_LIMIT = 51_200  # bytes of TemplateBody CloudFormation accepts; larger templates go through S3
STACK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,99}$")  # Glue stores the database named after it in lower case
CAPABILITIES = ["CAPABILITY_IAM"]  # the stack creates roles (with generated names)


UPDATABLE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE"}


class DeployError(Exception):
    """The deployment cannot proceed as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Deployed:
    stack_name: str
    outputs: dict[str, str]
    passes: int  # CloudFormation operations made (0: nothing changed)


def template_arn_parameters(template: Mapping[str, Any], outputs: Mapping[str, str]) -> dict[str, str]:
    """The second pass's parameters: each `Arn<Template><Partner>` from the output of the same template."""
    found = {}
    for name in template["Parameters"]:
        if name.startswith("Arn"):
            output = "Template" + name.removeprefix("Arn")
            if output not in outputs:
                raise DeployError(f"the stack has no output {output} for parameter {name}")
            found[name] = outputs[output]
    return found


def missing_parameters(template: Mapping[str, Any], given: Mapping[str, str]) -> list[str]:
    """Parameters the operator must give (no default, not set by the deploy itself), with what they are."""
    return [
        f"{name}: {spec.get('Description', '')}"
        for name, spec in template["Parameters"].items()
        if "Default" not in spec and name not in given
    ]


def deploy(
    config: ProjectConfig,
    stack_name: str,
    parameters: Mapping[str, str],
    *,
    cloudformation: Any = None,
    s3: Any = None,
    template_bucket: str | None = None,
    out: TextIO = sys.stdout,
) -> Deployed:
    """Create or update `stack_name` from `config` with the operator's `parameters`; returns its outputs."""
    cloudformation = cloudformation or boto3.client("cloudformation")
    if not STACK_NAME.match(stack_name):
        raise DeployError(
            f"stack name {stack_name!r}: use lower-case letters, digits and hyphens, starting with a letter (the "
            "Glue database is named after the stack, and Glue keeps names in lower case)"
        )
    template = build_stack(config)
    missing = missing_parameters(template, parameters)
    if missing:
        raise DeployError("parameters to give (--parameter NAME=VALUE):\n  " + "\n  ".join(missing))
    unknown = sorted(set(parameters) - set(template["Parameters"]))
    if unknown:
        raise DeployError(f"the stack has no parameter {', '.join(unknown)}")
    existing = _existing(cloudformation, stack_name)
    source = _template_source(template, stack_name, s3, template_bucket)
    declared = set(template["Parameters"])
    if existing is None:
        print(f"creating {stack_name} (pass 1 of 2: rules allow no template yet)", file=out)
        cloudformation.create_stack(
            StackName=stack_name,
            Parameters=_listed(parameters, set()),
            Capabilities=CAPABILITIES,
            EnableTerminationProtection=True,
            Tags=[{"Key": "project", "Value": "audience_assets"}],
            **source,
        )
        _wait(cloudformation, "stack_create_complete", stack_name)
        passes, current = 1, dict(parameters)
    else:
        previous = {p["ParameterKey"]: p.get("ParameterValue", "") for p in existing.get("Parameters", [])}
        print(f"updating {stack_name} (pass 1 of 2: the templates' ARNs as they were)", file=out)
        kept = (set(previous) & declared) - set(parameters)
        passes = int(_update(cloudformation, stack_name, source, parameters, kept))
        current = {**{k: v for k, v in previous.items() if k in declared}, **parameters}
    outputs = _outputs(cloudformation, stack_name)
    arns = template_arn_parameters(template, outputs)
    if any(current.get(k, "") != v for k, v in arns.items()):
        print(f"updating {stack_name} (pass 2 of 2: the tables' rules allow the templates by ARN)", file=out)
        kept = set(current) - set(parameters) - set(arns)
        passes += int(_update(cloudformation, stack_name, source, {**parameters, **arns}, kept))
        outputs = _outputs(cloudformation, stack_name)
    return Deployed(stack_name, outputs, passes)


def _template_source(
    template: Mapping[str, Any], stack_name: str, s3: Any, template_bucket: str | None
) -> dict[str, str]:
    body = json.dumps(template, separators=(",", ":"), sort_keys=True)
    if len(body.encode()) <= BODY_LIMIT:
        return {"TemplateBody": body}
    if not template_bucket:
        raise DeployError(
            f"the template is {len(body.encode()):,} bytes, over CloudFormation's {BODY_LIMIT:,} for a body: give "
            "--template-bucket BUCKET (an existing bucket of this account and region) to pass it through S3"
        )
    s3 = s3 or boto3.client("s3")
    key = f"audience_assets/{stack_name}.json"
    s3.put_object(Bucket=template_bucket, Key=key, Body=body.encode(), ServerSideEncryption="aws:kms")
    region = s3.meta.region_name
    return {"TemplateURL": f"https://{template_bucket}.s3.{region}.amazonaws.com/{key}"}


def _existing(cloudformation: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as error:
        if "does not exist" in error.response["Error"].get("Message", ""):
            return None
        raise
    status = stack["StackStatus"]
    events = f"aws cloudformation describe-stack-events --stack-name {stack_name}"
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(
            f"{stack_name} failed to create and was rolled back (ROLLBACK_COMPLETE): read its events "
            f"({events}), delete it, deploy again"
        )
    if status.endswith("_IN_PROGRESS"):
        raise DeployError(f"{stack_name} is {status}: wait for that operation to end, then deploy again")
    if status not in UPDATABLE:
        raise DeployError(f"{stack_name} is {status} and cannot be updated as it is: read its events ({events})")
    return stack


def _update(
    cloudformation: Any, stack_name: str, source: dict[str, str], values: dict[str, str], keep: set[str]
) -> bool:
    """One stack update; False when CloudFormation finds nothing to change."""
    try:
        cloudformation.update_stack(
            StackName=stack_name, Parameters=_listed(values, keep), Capabilities=CAPABILITIES, **source
        )
    except ClientError as error:
        if "No updates are to be performed" in error.response["Error"].get("Message", ""):
            return False
        raise
    _wait(cloudformation, "stack_update_complete", stack_name)
    return True


def _listed(values: Mapping[str, str], keep: set[str]) -> list[dict[str, Any]]:
    given = [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in sorted(values.items()) if k not in keep]
    return given + [{"ParameterKey": k, "UsePreviousValue": True} for k in sorted(keep)]


def _wait(cloudformation: Any, waiter: str, stack_name: str) -> None:
    try:
        cloudformation.get_waiter(waiter).wait(StackName=stack_name, WaiterConfig={"Delay": 15, "MaxAttempts": 240})
    except Exception as error:  # the waiter's own error names the final status; the events say why
        raise DeployError(
            f"{stack_name} did not complete ({error}): see aws cloudformation describe-stack-events "
            f"--stack-name {stack_name}"
        ) from None


def _outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
