"""Deployment documents: the IAM policies are valid JSON and grant nothing service-wide."""

from __future__ import annotations

import json

import pytest

from audience_assets_tests.conftest import REPO

POLICIES = sorted((REPO / "deploy" / "iam").glob("*.json"))
GUARDED = ("s3", "kms", "cleanrooms", "secretsmanager")


@pytest.mark.parametrize("path", POLICIES, ids=[p.name for p in POLICIES])
def test_policy_is_valid_and_names_its_resources(path):
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17" and policy["Statement"]
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        services = {a.split(":")[0] for a in actions}
        assert all(":" in a and "*" not in a for a in actions), statement["Sid"]
        resources = statement.get("Resource", [])
        resources = resources if isinstance(resources, list) else [resources]
        if not services & set(GUARDED) or statement["Effect"] == "Deny":  # a Deny only ever takes away
            continue
        for resource in resources:
            assert resource != "*", statement["Sid"]
            parts = resource.split(":", 5)
            assert parts[2] in GUARDED, resource
            # the account, region and named thing (bucket, key, membership, secret) are never wildcards;
            # only object keys under a named prefix may be (".../landing/*")
            named = parts[5].split("/")[0] if parts[2] == "s3" else parts[5].split("/")[:2]
            assert "*" not in "".join(named) and "*" not in "".join(parts[3:5]), resource
            if parts[2] == "s3" and "*" in parts[5]:
                assert parts[5].endswith("/*") and parts[5].count("/") >= 2, resource


def test_the_policies_are_there():
    assert {p.name for p in POLICIES} >= {"dagster-run-role-policy.json", "cleanrooms-data-access-role-policy.json",
                                          "cleanrooms-data-access-role-trust.json"}
