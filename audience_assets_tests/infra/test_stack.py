"""The generated stack, read offline (every intrinsic function resolved as a dry run names the resources) and held
to what the code does and what AWS documents: roles that name what they act on, Glue tables with the types the
pipeline writes, analysis rules that are the local engine's, Spark templates that read only associated tables,
buckets that refuse plain HTTP and other keys. (The run role against the calls the code makes, and the stack
applied and run end to end, are in e2e/test_aws_mode.py; cfn-lint and checkov run in .ci/run.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from audience_assets.core import layout
from audience_assets.core.cleanroom import collaboration
from audience_assets.core.cleanroom.match import template_name
from audience_assets.core.cleanroom.rules import rule_from_policy
from audience_assets.core.config import load_config
from audience_assets.infra.cfn import logical
from audience_assets.infra.stack import GLUE_TYPES, build_stack, to_json
from audience_assets.standins import cloudformation
from audience_assets_tests import iam
from audience_assets_tests.conftest import copy_config

ACCOUNT, REGION, NAME = "111122223333", "eu-west-1", "aa-prod"
MEMBERSHIP = "0f0e0d0c-0b0a-4909-8807-060504030201"
# actions AWS gives no resource type to: "*" is the only resource they take (Service Authorization Reference)
NO_RESOURCE_TYPE = {
    "cloudwatch:PutMetricData",
    "ecr:GetAuthorizationToken",
    "ecs:DescribeTaskDefinition",
    "ec2:DescribeNetworkInterfaces",
    *(f"ssmmessages:{a}{c}Channel" for a in ("Create", "Open") for c in ("Control", "Data")),
}


def parameters(config, *, allow: bool | str = True) -> dict:
    """The operator's parameters, and the deploy's second pass: templates allowed by the local engine's ARNs
    (`allow` a partner's name: only its templates are known yet, as when another partner has just been added)."""
    known = config.partners if allow is True else [allow] if allow else []
    arns = {f"Arn{logical(t, p)}": collaboration.template_arn(t, p) for t in collaboration.TEMPLATES for p in known}
    return {
        "MembershipId": MEMBERSHIP,
        "CodeLocationImage": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/audience-assets:1",
        "VpcId": "vpc-0a1b2c3d",
        "PrivateSubnetIds": ["subnet-1", "subnet-2"],
        "MetaAdAccountId": "act_42",
        **arns,
    }


def dry(config, *, allow: bool | str = True) -> tuple[dict, cloudformation.Stack, dict]:
    template = build_stack(config)
    stack = cloudformation.dry(template, NAME, parameters(config, allow=allow), account=ACCOUNT, region=REGION)
    resolved = {logical: stack.resolve(body) for logical, body in template["Resources"].items()}
    return template, stack, resolved


def of_type(resolved: dict, kind: str) -> dict:
    return {logical: body["Properties"] for logical, body in resolved.items() if body["Type"] == kind}


@pytest.fixture(scope="module")
def config():
    return load_config()


def test_every_reference_resolves_and_the_json_is_stable(config):
    template, stack, resolved = dry(config)
    text = json.dumps(resolved) + json.dumps({k: stack.resolve(v) for k, v in template["Outputs"].items()})
    assert '"Ref"' not in text and '"Fn::' not in text and "${" not in text.replace("${AWS::Region}", "")
    assert not re.search(r"<[A-Z][A-Z_]*>", json.dumps(template)), "a placeholder for a human to replace"
    assert to_json(config) == to_json(load_config())  # generated, not edited: the same config, the same bytes


def test_roles_name_every_resource_they_act_on(config):
    _, stack, resolved = dry(config)
    buckets = {stack.physical[b] for b in ("DataBucket", "ResultsBucket", "AccessLogBucket")}
    seen = 0
    for role, properties in of_type(resolved, "AWS::IAM::Role").items():
        for inline in properties.get("Policies", []):
            for statement in inline["PolicyDocument"]["Statement"]:
                actions, resources = iam._listed(statement["Action"]), iam._listed(statement["Resource"])
                assert all(":" in a and not a.endswith(":*") for a in actions), (role, statement)
                if "*" in resources:
                    assert set(actions) <= NO_RESOURCE_TYPE, (role, statement["Sid"])
                    continue
                for resource in resources:
                    seen += 1
                    parts = resource.split(":", 5)
                    assert parts[1] == "aws" and parts[2] in resource, resource
                    if parts[2] == "s3":
                        assert parts[5].split("/")[0] in buckets, resource
                    elif parts[2] not in ("iam", "ecr"):
                        assert (parts[3], parts[4]) == (REGION, ACCOUNT), resource
                    named = parts[5].removesuffix(":*").split("/")[0]  # (a log group's streams: its ARN and ":*")
                    assert "*" not in named, resource  # never a wildcard bucket, key, group or table
    assert seen > 30


def test_glue_tables_have_the_columns_and_types_the_pipeline_writes(config, baseline: Path):
    """The tables the baseline run published (first party, each partner) read back with DuckDB: the Glue schema
    is theirs, column for column, so Clean Rooms reads what the code writes."""
    _, stack, resolved = dry(config)
    tables = of_type(resolved, "AWS::Glue::Table")
    assert {t["TableInput"]["Name"] for t in tables.values()} == {"first_party", *config.partners}
    for properties in tables.values():
        table = properties["TableInput"]
        location = table["StorageDescriptor"]["Location"]
        prefix = location.removeprefix(f"s3://{stack.physical['DataBucket']}/")
        written = baseline / "data" / prefix / "data.parquet"
        assert written.exists(), location
        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{written}')").fetchall()
        assert [{"Name": c[0], "Type": GLUE_TYPES[c[1]]} for c in described] == table["StorageDescriptor"]["Columns"]
    assert layout.CLEAN_ROOM_FIRST_PARTY.startswith(prefix.split("/")[0])


def test_the_configured_tables_rules_are_the_local_engines(config):
    for allow in (True, False, "acme_data"):
        _, _, resolved = dry(config, allow=allow)
        rules = {}
        for properties in of_type(resolved, "AWS::CleanRooms::ConfiguredTable").values():
            (rule,) = properties["AnalysisRules"]
            assert rule["Type"] == "CUSTOM"  # Spark takes no other
            policy = cloudformation._lower(rule["Policy"]["V1"])
            rules[properties["Name"].removeprefix(f"{NAME}-")] = rule_from_policy(
                policy, tuple(properties["AllowedColumns"])
            )
        expected = {
            "first_party": collaboration.first_party_rule(None, list(config.partners), config.match_keys),
            **{p: collaboration.partner_rule(None, p) for p in config.partners},
        }
        if allow is True:
            assert rules == expected
            continue
        # the first pass, or a partner just added: every other control in place, only the templates that exist
        known = {collaboration.template_arn(t, allow) for t in collaboration.TEMPLATES} if allow else set()
        assert {n: r.allowed_analyses for n, r in rules.items()} == {
            n: r.allowed_analyses & known for n, r in expected.items()
        }
        assert {n: r.disallowed_output_columns for n, r in rules.items()} == {
            n: r.disallowed_output_columns for n, r in expected.items()
        }


def test_templates_are_spark_sql_named_for_the_lookup_and_read_only_associated_tables(config):
    _, _, resolved = dry(config)
    associated = {p["Name"] for p in of_type(resolved, "AWS::CleanRooms::ConfiguredTableAssociation").values()}
    templates = of_type(resolved, "AWS::CleanRooms::AnalysisTemplate")
    assert len(templates) == len(collaboration.TEMPLATES) * len(config.partners)
    for properties in templates.values():
        text = properties["Source"]["Text"]
        tree = sqlglot.parse_one(text, read="spark", error_level=sqlglot.ErrorLevel.RAISE)
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        assert {t.name for t in tree.find_all(exp.Table)} - ctes <= associated, properties["Name"]
        template, partner = next(
            (t, p)
            for t in collaboration.TEMPLATES
            for p in config.partners
            if properties["Name"] == template_name(t, p)
        )
        contract = config.partners[partner]
        local = collaboration.analyses(partner, contract.match_keys, contract.clean_room.match_on, "CUSTOM")
        assert text == local[template]  # the SQL the local engine runs


def test_buckets_are_encrypted_private_versioned_and_expire_what_should_go(config):
    _, stack, resolved = dry(config)
    key = stack.attributes["ProjectKey"]["Arn"]
    buckets = of_type(resolved, "AWS::S3::Bucket")
    for name in ("DataBucket", "ResultsBucket"):
        bucket = buckets[name]
        (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert sse == {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
        }
    for name, bucket in buckets.items():
        assert (
            all(bucket["PublicAccessBlockConfiguration"].values())
            and len(bucket["PublicAccessBlockConfiguration"]) == 4
        )
        assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}, name
    rules = {n: {r["Id"]: r for r in b["LifecycleConfiguration"]["Rules"]} for n, b in buckets.items()}
    landing = rules["DataBucket"]["PlaintextGoesForGood"]
    assert landing["Prefix"] == layout.LANDING_ROOT and landing["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert rules["ResultsBucket"]["ResultsExpire"]["ExpirationInDays"] <= 7
    assert all("AbortInterruptedUploads" in rules[n] for n in ("DataBucket", "ResultsBucket"))
    assert stack.physical["DataBucket"] != stack.physical["ResultsBucket"]  # Spark's rule: results apart


def test_bucket_policies_refuse_plain_http_and_writes_under_another_key(config):
    """Judged with their conditions (moto would apply them without): a request any bucket policy denies is
    refused whatever the caller's own policy allows."""
    _, stack, resolved = dry(config)
    key = stack.attributes["ProjectKey"]["Arn"]
    policies = {p["Bucket"]: p["PolicyDocument"] for p in of_type(resolved, "AWS::S3::BucketPolicy").values()}
    data = stack.physical["DataBucket"]
    assert set(policies) == {stack.physical[b] for b in ("DataBucket", "ResultsBucket", "AccessLogBucket")}

    def denied(bucket: str, action: str, **context) -> bool:
        request = iam.Request(action, f"arn:aws:s3:::{bucket}/staging/x.parquet", tuple(context.items()))
        deny = {"Statement": [dict(s, Effect="Allow") for s in policies[bucket]["Statement"] if s["Effect"] == "Deny"]}
        return bool(iam.allowed_by(deny, request))

    tls = {"aws:SecureTransport": "true"}
    for bucket in policies:
        assert denied(bucket, "s3:GetObject", **{"aws:SecureTransport": "false"})
        assert not denied(bucket, "s3:GetObject", **tls)
    assert not denied(data, "s3:PutObject", **tls, **{"s3:x-amz-server-side-encryption-aws-kms-key-id": key})
    assert not denied(data, "s3:PutObject", **tls)  # no header: the bucket's default, the project key
    other = key.replace(key.rsplit("/", 1)[1], "another-key")
    assert denied(data, "s3:PutObject", **tls, **{"s3:x-amz-server-side-encryption-aws-kms-key-id": other})
    assert denied(data, "s3:PutObject", **tls, **{"s3:x-amz-server-side-encryption": "AES256"})
    kms = {"s3:x-amz-server-side-encryption": "aws:kms"}
    assert denied(data, "s3:PutObject", **tls, **kms)  # KMS with no key named: S3 would use aws/s3
    assert not denied(data, "s3:PutObject", **tls, **kms, **{"s3:x-amz-server-side-encryption-aws-kms-key-id": key})


def test_the_data_access_role_reads_only_the_associated_tables(config):
    _, stack, resolved = dry(config)
    statements = resolved["CleanRoomsDataAccessRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    data = stack.physical["DataBucket"]
    readable = [r for s in statements if "s3:GetObject" in s["Action"] for r in iam._listed(s["Resource"])]
    assert sorted(readable) == sorted(
        f"arn:aws:s3:::{data}/{key.rsplit('/', 1)[0]}/*"
        for key in [layout.CLEAN_ROOM_FIRST_PARTY, *(layout.partner_table(p) for p in config.partners)]
    )
    trust = resolved["CleanRoomsDataAccessRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Condition"]["ArnLike"]["aws:SourceArn"].endswith(f":{ACCOUNT}:membership/{MEMBERSHIP}")


def test_a_member_partner_gets_templates_but_no_table_and_its_data_is_not_readable(tmp_path: Path):
    folder = copy_config(tmp_path / "config")
    partners = folder / "partners.yaml"
    partners.write_text(
        partners.read_text().replace("  beta_insights:\n", "  beta_insights:\n    clean_room: {member: true}\n")
    )
    config = load_config(folder)
    _, _, resolved = dry(config)
    named = {
        kind: sorted(p.get("Name") or p.get("TableInput", {}).get("Name") for p in of_type(resolved, kind).values())
        for kind in ("AWS::Glue::Table", "AWS::CleanRooms::ConfiguredTableAssociation")
    }
    assert named == {k: ["acme_data", "first_party"] for k in named}
    templates = sorted(p["Name"] for p in of_type(resolved, "AWS::CleanRooms::AnalysisTemplate").values())
    assert templates == sorted(template_name(t, p) for t in collaboration.TEMPLATES for p in config.partners)
    access = json.dumps(resolved["CleanRoomsDataAccessRole"])
    assert "beta_insights" not in access and "acme_data" in access


def test_each_tenant_gets_its_token_secret_and_its_alarms(tmp_path: Path):
    from audience_assets_tests.e2e.test_tenants import TENANTS, _config_dir

    config = load_config(_config_dir(tmp_path))
    template, _, resolved = dry(config)
    assert "MetaAdAccountId" not in template["Parameters"]  # each tenant's account is in tenants.yaml
    secrets = of_type(resolved, "AWS::SecretsManager::Secret")
    assert sorted(t["Value"] for s in secrets.values() for t in s["Tags"] if t["Key"] == "tenant") == sorted(TENANTS)
    alarms = of_type(resolved, "AWS::CloudWatch::Alarm").values()
    assert {d["Value"] for a in alarms for d in a["Dimensions"] if d["Name"] == "tenant"} == set(TENANTS)
