"""CloudFormation's vocabulary, for the generated stack: intrinsic functions, logical ids, tags, and checkov
suppressions that carry their reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROJECT_TAG = {"Key": "project", "Value": "audience_assets"}


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def att(name: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [name, attribute]}


def sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def join(*parts: Any) -> dict[str, Any]:
    return {"Fn::Join": ["", list(parts)]}


def arn(service: str, resource: str) -> dict[str, str]:
    """An ARN of this stack's account and region (`resource` may hold ${...} references)."""
    return sub(f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}")


def logical(*parts: str) -> str:
    """A CloudFormation logical id from names like `acme_data`: `AcmeData`."""
    return "".join(word.capitalize() for part in parts for word in part.replace("-", "_").split("_"))


def tags(extra: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    return [PROJECT_TAG, *({"Key": k, "Value": v} for k, v in sorted((extra or {}).items()))]


def skip(*reasons: tuple[str, str]) -> dict[str, Any]:
    """Metadata telling checkov why a rule does not apply here (every suppression is justified in place)."""
    return {"checkov": {"skip": [{"id": rule, "comment": why} for rule, why in reasons]}}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(sid: str, actions: list[str], resources: Any, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement
