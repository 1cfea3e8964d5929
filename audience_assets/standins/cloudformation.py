"""CloudFormation, played for the stand-ins: the generated stack (`infra.stack`) applied resource by resource
through boto3 to whatever the clients' endpoints are (moto for S3, KMS, SQS, EventBridge, Secrets Manager, Glue
and IAM; `standins.cleanrooms_api` for Clean Rooms). Applying the very template a deployment uses is what ties
the code to it: the buckets, the Glue schemas, the analysis rules and templates the pipeline then runs against
are the ones the stack declares.

Resource types that only matter on a real account (ECS, RDS, EC2 security groups, alarms, logs, SNS) are
recorded, not created; so are bucket policies (moto would apply them without their conditions). Intrinsic
functions (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::If` with
`Fn::Equals`/`Fn::Not` conditions) and pseudo parameters are resolved as CloudFormation resolves them;
resources are created in dependency order.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.exceptions import ClientError

SKIPPED = {
    "AWS::ECS::Cluster",
    "AWS::ECS::TaskDefinition",
    "AWS::ECS::Service",
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBSubnetGroup",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::Logs::LogGroup",
    "AWS::SNS::Topic",
    "AWS::SNS::Subscription",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
    # moto evaluates a bucket policy without its conditions, so TLS-only and only-the-project-key (deny unless...)
    # would deny everything; the stack's bucket policies are judged with their conditions in `test_stack`
    "AWS::S3::BucketPolicy",
}


_NO_VALUE = object()  # `Ref: AWS::NoValue`: the element or property it stands for is left out


class Stack:
    """One stack applied: physical ids and attributes of its resources, by logical id."""

    def __init__(
        self, template: Mapping[str, Any], name: str, parameters: Mapping[str, Any], *, account: str, region: str
    ):
        self.template, self.name, self.account, self.region = template, name, account, region
        self.parameters = {k: v.get("Default") for k, v in template.get("Parameters", {}).items()}
        self.parameters.update(parameters)
        self.physical: dict[str, Any] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        self.skipped: list[str] = []

    # ------------------------------------------------------------------ intrinsic functions
    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not _NO_VALUE}
        ((function, argument),) = value.items()
        if function == "Ref":
            return self._ref(argument)
        if function == "Fn::GetAtt":
            return self.attributes[argument[0]][argument[1]]
        if function == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(self._named(m.group(1))), argument)
        if function == "Fn::Join":
            return argument[0].join(str(p) for p in self.resolve(argument[1]))
        if function == "Fn::Select":
            return self.resolve(argument[1])[int(argument[0])]
        if function == "Fn::Split":
            return str(self.resolve(argument[1])).split(argument[0])
        if function == "Fn::If":
            return self.resolve(argument[1] if self.condition(argument[0]) else argument[2])
        if function == "Fn::Equals":
            return self.resolve(argument[0]) == self.resolve(argument[1])
        if function == "Fn::Not":
            return not self.resolve(argument[0])
        return {function: self.resolve(argument)}

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::StackName": self.name,
            "AWS::Partition": "aws",
            "AWS::NoValue": _NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical[name]

    def _named(self, name: str) -> Any:
        if "." in name:
            resource, attribute = name.split(".", 1)
            return self.attributes[resource][attribute]
        return self._ref(name)

    # ------------------------------------------------------------------ order
    def order(self) -> list[str]:
        resources = self.template["Resources"]

        def needs(value: Any) -> set[str]:
            if isinstance(value, list):
                return set().union(*(needs(v) for v in value)) if value else set()
            if not isinstance(value, dict):
                return set()
            found: set[str] = set()
            for key, item in value.items():
                if key == "Ref" and item in resources:
                    found.add(item)
                elif key == "Fn::GetAtt":
                    found.add(item[0])
                elif key == "Fn::Sub":
                    text = item if isinstance(item, str) else item[0]
                    found |= {n.split(".")[0] for n in re.findall(r"\$\{([^}]+)\}", text)} & set(resources)
                else:
                    found |= needs(item)
            return found

        done: list[str] = []
        pending = {
            name: needs(body.get("Properties", {})) | set(body.get("DependsOn", [])) for name, body in resources.items()
        }
        while pending:
            ready = sorted(n for n, deps in pending.items() if deps <= set(done))
            if not ready:
                raise ValueError(f"circular dependencies among {sorted(pending)}")
            done += ready
            for name in ready:
                del pending[name]
        return done


class _Recorded(dict):
    """The attributes of a resource recorded, not created: stable placeholders that look like what they stand for."""

    def __init__(self, stack: Stack, logical: str):
        super().__init__()
        self.prefix = f"arn:aws:{logical.lower()}:{stack.region}:{stack.account}:{stack.name}/{logical}"

    def __missing__(self, attribute: str) -> str:
        return f"{self.prefix}/{attribute}"


_DRY = {  # type -> (physical id, Arn) of a resource as a dry run names it
    "AWS::S3::Bucket": lambda s, n: (f"{s.name}-{n.lower()}", f"arn:aws:s3:::{s.name}-{n.lower()}"),
    "AWS::KMS::Key": lambda s, n: (n, f"arn:aws:kms:{s.region}:{s.account}:key/{n}"),
    "AWS::SQS::Queue": lambda s, n: (
        f"https://sqs.{s.region}.amazonaws.com/{s.account}/{s.name}-{n}",
        f"arn:aws:sqs:{s.region}:{s.account}:{s.name}-{n}",
    ),
    "AWS::SecretsManager::Secret": lambda s, n: (
        f"arn:aws:secretsmanager:{s.region}:{s.account}:secret:{s.name}/{n}-AbCdEf",
        "",
    ),
    "AWS::IAM::Role": lambda s, n: (f"{s.name}-{n}", f"arn:aws:iam::{s.account}:role/{s.name}-{n}"),
    "AWS::Events::Rule": lambda s, n: (f"{s.name}-{n}", f"arn:aws:events:{s.region}:{s.account}:rule/{s.name}-{n}"),
    "AWS::Glue::Database": lambda s, n: (f"{s.name.replace('-', '_')}_cr", ""),
    "AWS::Logs::LogGroup": lambda s, n: (
        f"{s.name}-{n}",
        f"arn:aws:logs:{s.region}:{s.account}:log-group:{s.name}-{n}",
    ),
}


def dry(template: Mapping[str, Any], name: str, parameters: Mapping[str, Any], *, account: str, region: str) -> Stack:
    """The stack as it would be named, with nothing created: every intrinsic function resolves (for reading its
    policies and properties offline)."""
    stack = Stack(template, name, parameters, account=account, region=region)
    for logical, body in template["Resources"].items():
        named = _DRY.get(body["Type"])
        physical, resource_arn = named(stack, logical) if named else (f"{name}-{logical}", "")
        stack.physical[logical] = physical
        stack.attributes[logical] = _Recorded(stack, logical)
        if resource_arn:
            stack.attributes[logical]["Arn"] = resource_arn
    return stack


def apply(template: Mapping[str, Any], name: str, parameters: Mapping[str, Any], *, region: str = "us-east-1") -> Stack:
    """Create every resource the stand-ins serve, in dependency order; returns the applied stack."""
    account = boto3.client("sts", region_name=region).get_caller_identity()["Account"]
    stack = Stack(template, name, parameters, account=account, region=region)
    for logical in stack.order():
        body = template["Resources"][logical]
        if "Condition" in body and not stack.condition(body["Condition"]):
            continue
        if body["Type"] in SKIPPED:
            stack.skipped.append(logical)
            stack.physical[logical] = f"{name}-{logical}"
            stack.attributes[logical] = _Recorded(stack, logical)
            continue
        properties = stack.resolve(body.get("Properties", {}))
        physical, attributes = _CREATE[body["Type"]](stack, logical, properties)
        stack.physical[logical], stack.attributes[logical] = physical, attributes
    return stack


class CloudFormationClient:
    """The CloudFormation API calls `infra.deploy` makes, served by `apply` and `update_rules`: a create applies
    the template, an update may change only parameters (the second pass's, which reach the analysis rules).
    Stands in for `boto3.client("cloudformation")` where no emulator applies Clean Rooms resources."""

    def __init__(self, region: str = "us-east-1"):
        self.region = region
        self.stacks: dict[str, Stack] = {}
        self.status: dict[str, str] = {}
        self.calls: list[str] = []

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803 (boto3's argument names)
        self.calls.append("DescribeStacks")
        stack = self.stacks.get(StackName)
        if stack is None:
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": f"Stack with id {StackName} does not exist"}},
                "DescribeStacks",
            )
        outputs = {k: stack.resolve(v["Value"]) for k, v in stack.template.get("Outputs", {}).items()}
        return {
            "Stacks": [
                {
                    "StackName": StackName,
                    "StackStatus": self.status[StackName],
                    "Parameters": [
                        {"ParameterKey": k, "ParameterValue": ",".join(v) if isinstance(v, list) else str(v)}
                        for k, v in stack.parameters.items()
                        if v is not None
                    ],
                    "Outputs": [{"OutputKey": k, "OutputValue": str(v)} for k, v in outputs.items()],
                }
            ]
        }

    def create_stack(self, StackName: str, Parameters: list[dict[str, Any]], **source: Any) -> dict:  # noqa: N803
        self.calls.append("CreateStack")
        template = self._template(source)
        self.stacks[StackName] = apply(template, StackName, self._values(template, Parameters, {}), region=self.region)
        self.status[StackName] = "CREATE_COMPLETE"
        return {"StackId": StackName}

    def update_stack(self, StackName: str, Parameters: list[dict[str, Any]], **source: Any) -> dict:  # noqa: N803
        self.calls.append("UpdateStack")
        stack = self.stacks[StackName]
        template = self._template(source)
        if template != stack.template:
            raise NotImplementedError("the stand-in updates parameters only, not a changed template")
        values = self._values(template, Parameters, stack.parameters)
        if values == stack.parameters:
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": "No updates are to be performed."}}, "UpdateStack"
            )
        update_rules(stack, values)
        self.status[StackName] = "UPDATE_COMPLETE"
        return {"StackId": StackName}

    def _template(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """The template from its body, or from S3 by its URL (https://<bucket>.s3.<region>.amazonaws.com/<key>)."""
        if "TemplateBody" in source:
            return json.loads(source["TemplateBody"])
        host, _, key = source["TemplateURL"].removeprefix("https://").partition("/")
        body = boto3.client("s3", region_name=self.region).get_object(Bucket=host.split(".s3.")[0], Key=key)["Body"]
        return json.loads(body.read())

    def get_waiter(self, name: str) -> Any:
        class Done:  # every operation above completes before it returns
            def wait(self, **_: Any) -> None:
                return None

        return Done()

    @staticmethod
    def _values(template: Mapping[str, Any], given: list[dict[str, Any]], previous: Mapping[str, Any]) -> dict:
        values = {k: v.get("Default") for k, v in template["Parameters"].items()}
        for parameter in given:
            key = parameter["ParameterKey"]
            value = previous[key] if parameter.get("UsePreviousValue") else parameter["ParameterValue"]
            kind = template["Parameters"][key]["Type"]
            listed = kind.startswith("List<") or kind == "CommaDelimitedList"
            values[key] = value.split(",") if listed and isinstance(value, str) else value
        return values


def update_rules(stack: Stack, parameters: Mapping[str, Any]) -> None:
    """The deploy command's second pass: the same stack with new parameters, of which only the configured
    tables' analysis rules change (they allow the templates by ARN)."""
    stack.parameters.update(parameters)
    client = boto3.client("cleanrooms", region_name=stack.region)
    for logical, body in stack.template["Resources"].items():
        if body["Type"] == "AWS::CleanRooms::ConfiguredTable":
            for rule in stack.resolve(body["Properties"]["AnalysisRules"]):
                client.update_configured_table_analysis_rule(
                    configuredTableIdentifier=stack.physical[logical],
                    analysisRuleType=rule["Type"],
                    analysisRulePolicy={"v1": _lower(rule["Policy"]["V1"])},
                )


# ---------------------------------------------------------------------------- one function per resource type


def _short(stack: Stack, logical: str) -> str:
    return hashlib.sha256(f"{stack.name}/{logical}".encode()).hexdigest()[:10]


def _key(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    key = boto3.client("kms", region_name=stack.region).create_key(Description=p.get("Description", ""))["KeyMetadata"]
    return key["KeyId"], {"Arn": key["Arn"]}


def _alias(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    boto3.client("kms", region_name=stack.region).create_alias(AliasName=p["AliasName"], TargetKeyId=p["TargetKeyId"])
    return p["AliasName"], {}


def _bucket(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    name = f"{stack.name}-{logical.lower()}-{_short(stack, logical)}"[:63]
    s3 = boto3.client("s3", region_name=stack.region)
    s3.create_bucket(Bucket=name)
    rules = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    s3.put_bucket_encryption(
        Bucket=name, ServerSideEncryptionConfiguration={"Rules": [_lower_encryption(r) for r in rules]}
    )
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": p["VersioningConfiguration"]["Status"]})
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
    if p.get("NotificationConfiguration", {}).get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
        s3.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
    if "LifecycleConfiguration" in p:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle(r) for r in p["LifecycleConfiguration"]["Rules"]]}
        )
    return name, {"Arn": f"arn:aws:s3:::{name}"}


def _lower_encryption(rule: dict[str, Any]) -> dict[str, Any]:
    default = rule["ServerSideEncryptionByDefault"]
    return {
        "ApplyServerSideEncryptionByDefault": {k: v for k, v in default.items()},
        **({"BucketKeyEnabled": rule["BucketKeyEnabled"]} if "BucketKeyEnabled" in rule else {}),
    }


def _lifecycle(rule: dict[str, Any]) -> dict[str, Any]:
    lowered: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "AbortIncompleteMultipartUpload" in rule:
        lowered["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    if "NoncurrentVersionExpiration" in rule:
        lowered["NoncurrentVersionExpiration"] = rule["NoncurrentVersionExpiration"]
    if "ExpirationInDays" in rule:
        lowered["Expiration"] = {"Days": rule["ExpirationInDays"]}
    elif rule.get("ExpiredObjectDeleteMarker"):
        lowered["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    return lowered


def _bucket_policy(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    boto3.client("s3", region_name=stack.region).put_bucket_policy(
        Bucket=p["Bucket"], Policy=json.dumps(p["PolicyDocument"])
    )
    return logical, {}


def _glue_database(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    boto3.client("glue", region_name=stack.region).create_database(DatabaseInput=p["DatabaseInput"])
    return p["DatabaseInput"]["Name"], {}


def _glue_table(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    boto3.client("glue", region_name=stack.region).create_table(
        DatabaseName=p["DatabaseName"], TableInput=p["TableInput"]
    )
    return p["TableInput"]["Name"], {}


def _lower(value: Any) -> Any:
    """CloudFormation's PascalCase property names as the API's camelCase members."""
    if isinstance(value, list):
        return [_lower(v) for v in value]
    if isinstance(value, dict):
        return {(k[:1].lower() + k[1:]): _lower(v) for k, v in value.items()}
    return value


def _configured_table(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    client = boto3.client("cleanrooms", region_name=stack.region)
    glue = p["TableReference"]["Glue"]
    table = client.create_configured_table(
        name=p["Name"],
        description=p.get("Description", ""),
        tableReference={"glue": {"databaseName": glue["DatabaseName"], "tableName": glue["TableName"]}},
        allowedColumns=p["AllowedColumns"],
        analysisMethod=p["AnalysisMethod"],
    )["configuredTable"]
    for rule in p.get("AnalysisRules", []):
        client.create_configured_table_analysis_rule(
            configuredTableIdentifier=table["id"],
            analysisRuleType=rule["Type"],
            analysisRulePolicy={"v1": _lower(rule["Policy"]["V1"])},
        )
    return table["id"], {"ConfiguredTableIdentifier": table["id"], "Arn": table["arn"]}


def _association(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    made = boto3.client("cleanrooms", region_name=stack.region).create_configured_table_association(
        name=p["Name"],
        membershipIdentifier=p["MembershipIdentifier"],
        configuredTableIdentifier=p["ConfiguredTableIdentifier"],
        roleArn=p["RoleArn"],
    )["configuredTableAssociation"]
    return made["id"], {"Arn": made["arn"]}


def _template(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    made = boto3.client("cleanrooms", region_name=stack.region).create_analysis_template(
        membershipIdentifier=p["MembershipIdentifier"],
        name=p["Name"],
        description=p.get("Description", ""),
        format=p["Format"],
        source={"text": p["Source"]["Text"]},
    )["analysisTemplate"]
    return made["id"], {"Arn": made["arn"]}


def _queue(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=stack.region)
    attributes = {
        "KmsMasterKeyId": str(p["KmsMasterKeyId"]),
        "MessageRetentionPeriod": str(p["MessageRetentionPeriod"]),
    }
    if "VisibilityTimeout" in p:
        attributes["VisibilityTimeout"] = str(p["VisibilityTimeout"])
    if "RedrivePolicy" in p:
        attributes["RedrivePolicy"] = json.dumps(p["RedrivePolicy"])
    url = sqs.create_queue(QueueName=f"{stack.name}-{logical}", Attributes=attributes)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, {"Arn": queue_arn, "QueueName": f"{stack.name}-{logical}"}


def _queue_policy(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=stack.region)
    for url in p["Queues"]:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(p["PolicyDocument"])})
    return logical, {}


def _rule(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    events = boto3.client("events", region_name=stack.region)
    rule_arn = events.put_rule(
        Name=f"{stack.name}-{logical}",
        EventPattern=json.dumps(p["EventPattern"]),
        State=p["State"],
        Description=p.get("Description", ""),
    )["RuleArn"]
    events.put_targets(
        Rule=f"{stack.name}-{logical}",
        Targets=[
            {"Id": t["Id"], "Arn": t["Arn"], **{k: t[k] for k in ("DeadLetterConfig", "RetryPolicy") if k in t}}
            for t in p["Targets"]
        ],
    )
    return f"{stack.name}-{logical}", {"Arn": rule_arn}


def _archive(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    made = boto3.client("events", region_name=stack.region).create_archive(
        ArchiveName=f"{stack.name}-{logical}",
        EventSourceArn=p["SourceArn"],
        EventPattern=json.dumps(p["EventPattern"]),
        RetentionDays=p["RetentionDays"],
    )
    return f"{stack.name}-{logical}", {"Arn": made["ArchiveArn"]}


def _secret(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    made = boto3.client("secretsmanager", region_name=stack.region).create_secret(
        Name=f"{stack.name}/{logical}", KmsKeyId=p["KmsKeyId"], Description=p.get("Description", "")
    )
    return made["ARN"], {}


def _role(stack: Stack, logical: str, p: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    iam = boto3.client("iam", region_name=stack.region)
    name = f"{stack.name}-{logical}"[:64]
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(p["AssumeRolePolicyDocument"]))["Role"]
    for inline in p.get("Policies", []):
        iam.put_role_policy(
            RoleName=name, PolicyName=inline["PolicyName"], PolicyDocument=json.dumps(inline["PolicyDocument"])
        )
    return name, {"Arn": role["Arn"]}


_CREATE = {
    "AWS::KMS::Key": _key,
    "AWS::KMS::Alias": _alias,
    "AWS::S3::Bucket": _bucket,
    "AWS::Glue::Database": _glue_database,
    "AWS::Glue::Table": _glue_table,
    "AWS::CleanRooms::ConfiguredTable": _configured_table,
    "AWS::CleanRooms::ConfiguredTableAssociation": _association,
    "AWS::CleanRooms::AnalysisTemplate": _template,
    "AWS::SQS::Queue": _queue,
    "AWS::SQS::QueuePolicy": _queue_policy,
    "AWS::Events::Rule": _rule,
    "AWS::Events::Archive": _archive,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::IAM::Role": _role,
}
