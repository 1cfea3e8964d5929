"""IAM, as far as the project's roles need it judged: the AWS calls the code makes, recorded from boto3 itself
(every client's `before-parameter-build` event), turned into the requests IAM authorizes (an S3 `ListObjectsV2`
is `s3:ListBucket` on the bucket with its `s3:prefix`; an SSE-KMS write also asks KMS for a data key; a
protected query's results are written with the caller's identity through Clean Rooms), and each request judged
against a policy document: allowed by some statement, whose actions, resources and conditions match."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import boto3


@dataclasses.dataclass(frozen=True)
class Call:
    service: str  # botocore's service name: s3, cleanrooms, kms...
    operation: str  # ListObjectsV2, PutObject, StartProtectedQuery...
    params: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: tuple[tuple[str, Any], ...] = ()  # condition keys of the request


@contextlib.contextmanager
def recording() -> Iterator[list[Call]]:
    """Every AWS call made through boto3 clients created while open (the code creates its clients lazily)."""
    calls: list[Call] = []
    lock = threading.Lock()

    def record(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        with lock:
            calls.append(Call(model.service_model.service_name, model.name, dict(params)))

    session = boto3._get_default_session()  # what boto3.client() uses
    session.events.register("before-parameter-build", record, unique_id="audience-assets-iam")
    try:
        yield calls
    finally:
        session.events.unregister("before-parameter-build", unique_id="audience-assets-iam")


S3_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
    "CopyObject": "s3:PutObject",
}


def requests(call: Call, *, region: str, account: str, key_arn: str) -> list[Request]:
    """What IAM authorizes for `call`. Every object of the project is SSE-KMS under `key_arn`, so reading one
    decrypts with it and writing one asks it for a data key."""
    p = call.params
    if call.service == "s3":
        action = S3_ACTIONS[call.operation]
        if call.operation == "ListObjectsV2":
            return [Request(action, f"arn:aws:s3:::{p['Bucket']}", (("s3:prefix", p.get("Prefix", "")),))]
        target = f"arn:aws:s3:::{p['Bucket']}/{p['Key']}"
        found = [Request(action, target)]
        if action == "s3:GetObject":
            found.append(Request("kms:Decrypt", key_arn))
        if call.operation in ("PutObject", "CreateMultipartUpload", "CopyObject"):
            found.append(Request("kms:GenerateDataKey", key_arn))
            if p.get("Tagging"):
                found.append(Request("s3:PutObjectTagging", target))
        return found
    if call.service == "cleanrooms":
        membership = f"arn:aws:cleanrooms:{region}:{account}:membership/{p['membershipIdentifier']}"
        found = [Request(f"cleanrooms:{call.operation}", membership)]
        if call.operation == "StartProtectedQuery":  # Clean Rooms writes the results as the caller (FAS)
            output = p["resultConfiguration"]["outputConfiguration"]["s3"]
            via = (("aws:CalledVia", ("cleanrooms.amazonaws.com",)),)
            bucket = f"arn:aws:s3:::{output['bucket']}"
            found += [
                Request("s3:PutObject", f"{bucket}/{output['keyPrefix']}/part", via),
                Request("s3:GetBucketLocation", bucket, via),
                Request("s3:ListBucket", bucket, via),
                Request("kms:GenerateDataKey", key_arn, via),
                Request("kms:Encrypt", key_arn, via),
            ]
        return found
    if call.service == "secretsmanager":
        return [Request("secretsmanager:GetSecretValue", p["SecretId"]), Request("kms:Decrypt", key_arn)]
    if call.service == "cloudwatch":
        return [Request("cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", p["Namespace"]),))]
    if call.service == "sqs":
        name = p["QueueUrl"].rstrip("/").rsplit("/", 1)[1]
        action = "sqs:DeleteMessage" if call.operation.startswith("DeleteMessage") else f"sqs:{call.operation}"
        return [Request(action, f"arn:aws:sqs:{region}:{account}:{name}")]
    raise AssertionError(f"an AWS call this judge does not know: {call.service}.{call.operation}")


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    """IAM's rules (IAM user guide, condition operators): a key absent from the request fails a condition, except
    a negated one (StringNotEquals...), which holds, and IfExists, which holds; Null tests presence."""
    for operator, tests in condition.items():
        base = operator.removesuffix("IfExists")
        for key, wanted in tests.items():
            wanted = [str(w) for w in _listed(wanted)]
            if base == "Null":
                if (key not in context) != (wanted == ["true"]):
                    return False
                continue
            if key not in context:
                if operator.endswith("IfExists") or "Not" in base:
                    continue
                return False
            have = context[key]
            if base in ("StringLike", "ArnLike"):
                ok = any(fnmatch.fnmatchcase(str(have), w) for w in wanted)
            elif base in ("StringEquals", "ArnEquals"):
                ok = str(have) in wanted
            elif base == "StringNotEquals":
                ok = str(have) not in wanted
            elif base == "Bool":
                ok = str(have).lower() in [w.lower() for w in wanted]
            elif base == "ForAnyValue:StringEquals":
                ok = any(h in wanted for h in _listed(have))
            else:
                raise AssertionError(f"a condition operator this judge does not know: {operator}")
            if not ok:
                return False
    return True


def allowed_by(policy: Mapping[str, Any], request: Request) -> list[str]:
    """The Sids of the statements allowing `request` (a Deny statement matching it empties the list)."""
    context = dict(request.context)
    matching, denied = [], False
    for statement in policy["Statement"]:
        actions = [a.lower() for a in _listed(statement["Action"])]
        if not any(fnmatch.fnmatchcase(request.action.lower(), a) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(request.resource, r) for r in _listed(statement["Resource"])):
            continue
        if not _condition_holds(statement.get("Condition", {}), context):
            continue
        if statement["Effect"] == "Deny":
            denied = True
        else:
            matching.append(statement.get("Sid", "?"))
    return [] if denied else matching


def judge(policy: Mapping[str, Any], calls: Sequence[Call], **where: str) -> tuple[list[Request], set[str]]:
    """(requests no statement allows, actions the policy allows that no call needed)."""
    needed = [r for call in calls for r in requests(call, **where)]
    refused = [r for r in needed if not allowed_by(policy, r)]
    granted = {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in _listed(s["Action"])}
    return refused, granted - {r.action for r in needed}
