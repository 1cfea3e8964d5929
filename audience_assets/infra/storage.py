"""The project key and the buckets, in the generated stack: the data bucket (landing zone, staging, the clean-room
tables, audiences, records) and the results bucket Clean Rooms writes to, both SSE-KMS with a bucket key under the
project key, versioned, public access blocked, TLS only, their access logs in a bucket of their own; lifecycle
rules make plaintext landing files deleted by retention not live on as old versions, abort interrupted multipart
uploads and expire results."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from audience_assets.core import layout
from audience_assets.core.config import ProjectConfig
from audience_assets.infra.cfn import att, ref, skip, sub, tags

LANDING_NONCURRENT_DAYS = 1  # a plaintext landing file retention deleted is gone for good a day later
RESULTS_DAYS = 7  # clean-room results (customer ids and segments) are read once, right after the query


def key(config: ProjectConfig) -> dict[str, Any]:
    """The project key every object, secret, queue, log and database is encrypted with, and its alias."""
    return {
        "ProjectKey": {
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Description": "audience_assets: every object, secret, queue, log and database of the project",
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "TheAccountAdministersTheKeyThroughIam",
                            "Effect": "Allow",
                            "Principal": {"AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                            "Action": "kms:*",
                            "Resource": "*",
                        },
                        {
                            "Sid": "ServicesEncryptForThisAccount",
                            "Effect": "Allow",
                            "Principal": {
                                "Service": [
                                    sub("logs.${AWS::Region}.amazonaws.com"),
                                    "events.amazonaws.com",
                                    "sns.amazonaws.com",
                                    "cloudwatch.amazonaws.com",
                                ]
                            },
                            "Action": ["kms:Decrypt", "kms:GenerateDataKey*", "kms:Encrypt", "kms:DescribeKey"],
                            "Resource": "*",
                            "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
                        },
                    ],
                },
                "Tags": tags(),
            },
        },
        "ProjectKeyAlias": {
            "Type": "AWS::KMS::Alias",
            "Properties": {"AliasName": sub("alias/${AWS::StackName}"), "TargetKeyId": ref("ProjectKey")},
        },
    }


# Every bucket of the stack: no public access of any kind, and object ownership by the bucket owner (no ACLs).
PRIVATE: dict[str, Any] = {
    "PublicAccessBlockConfiguration": {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    },
    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
}


def _bucket(logs_prefix: str, lifecycle: list[dict[str, Any]], *, events: bool = False) -> dict[str, Any]:
    """A project bucket: SSE-KMS under the project key, versioned, private, logged, its lifecycle `lifecycle` plus
    aborting interrupted uploads; `events`: its object events go to EventBridge (the landing zone)."""
    properties: dict[str, Any] = {
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [
                {
                    "BucketKeyEnabled": True,
                    "ServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": att("ProjectKey", "Arn"),
                    },
                }
            ]
        },
        "VersioningConfiguration": {"Status": "Enabled"},
        **PRIVATE,
        "LoggingConfiguration": {"DestinationBucketName": ref("AccessLogBucket"), "LogFilePrefix": logs_prefix},
        "LifecycleConfiguration": {
            "Rules": [
                {
                    "Id": "AbortInterruptedUploads",
                    "Status": "Enabled",
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                },
                *lifecycle,
            ]
        },
        "Tags": tags(),
    }
    if events:
        properties["NotificationConfiguration"] = {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    return {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
        "Metadata": skip(("CKV_AWS_18", "access logging is configured: to AccessLogBucket")),
    }


def _tls_only(bucket: str, extra: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """A bucket policy refusing plain HTTP, with the `extra` statements after it."""
    return {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": ref(bucket),
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "TlsOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [att(bucket, "Arn"), {"Fn::Join": ["", [att(bucket, "Arn"), "/*"]]}],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    },
                    *extra,
                ],
            },
        },
    }


def buckets(config: ProjectConfig) -> dict[str, Any]:
    """The access-log bucket, the data bucket and the results bucket, each with its policy."""
    return {
        "AccessLogBucket": _access_log_bucket(),
        "AccessLogBucketPolicy": _access_log_bucket_policy(),
        "DataBucket": _bucket("data/", _data_lifecycle(), events=True),
        "DataBucketPolicy": _tls_only("DataBucket", _only_the_project_key("DataBucket")),
        "ResultsBucket": _bucket("results/", _results_lifecycle()),
        "ResultsBucketPolicy": _tls_only("ResultsBucket"),
    }


def _data_lifecycle() -> list[dict[str, Any]]:
    """Plaintext landing files deleted by retention are gone for good a day later; other old versions in 30 days."""
    landing = {
        "Id": "PlaintextGoesForGood",
        "Status": "Enabled",
        "Prefix": layout.LANDING_ROOT,
        "NoncurrentVersionExpiration": {"NoncurrentDays": LANDING_NONCURRENT_DAYS},
        "ExpiredObjectDeleteMarker": True,
    }
    old_versions = {
        "Id": "OldVersionsExpire",
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
    }
    return [landing, old_versions]


def _results_lifecycle() -> list[dict[str, Any]]:
    """Clean-room results (customer ids and segments) are read once, right after the query: they expire."""
    return [
        {
            "Id": "ResultsExpire",
            "Status": "Enabled",
            "ExpirationInDays": RESULTS_DAYS,
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        }
    ]


def _only_the_project_key(bucket: str) -> list[dict[str, Any]]:
    """Bucket-policy statements refusing a write that names another key or another kind of encryption.

    A write that names no encryption gets the bucket's default (the project key); one that names another key or
    another kind of encryption is refused, and so is one asking for KMS without naming the key (S3 would use the
    account's aws/s3 key). `Null: false` tests that a header is there: a negated operator alone would also refuse
    the writes that name nothing."""
    key_id = "s3:x-amz-server-side-encryption-aws-kms-key-id"
    encryption = "s3:x-amz-server-side-encryption"
    conditions = (
        ("OnlyTheProjectKey", {"StringNotEquals": {key_id: att("ProjectKey", "Arn")}, "Null": {key_id: "false"}}),
        ("OnlyKms", {"StringNotEquals": {encryption: "aws:kms"}, "Null": {encryption: "false"}}),
        ("KmsNamesTheProjectKey", {"Null": {key_id: "true", encryption: "false"}}),
    )
    return [
        {
            "Sid": sid,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": {"Fn::Join": ["", [att(bucket, "Arn"), "/*"]]},
            "Condition": condition,
        }
        for sid, condition in conditions
    ]


def _access_log_bucket() -> dict[str, Any]:
    """Where the other buckets' server access logs go: SSE-S3 (the only encryption S3 delivers logs to), private,
    versioned, logs kept a year."""
    return {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            # S3 server access logs can be delivered only to a bucket encrypted with SSE-S3
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            **PRIVATE,
            "LifecycleConfiguration": {
                "Rules": [
                    {
                        "Id": "LogsExpire",
                        "Status": "Enabled",
                        "ExpirationInDays": 365,
                        "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                    }
                ]
            },
            "Tags": tags(),
        },
        "Metadata": skip(
            ("CKV_AWS_18", "the access-log bucket receives the other buckets' logs; logging it would loop"),
            ("CKV_AWS_145", "S3 server access logs can be delivered only to an SSE-S3 bucket"),
        ),
    }


def _access_log_bucket_policy() -> dict[str, Any]:
    """TLS only, and S3's log delivery (for this account's buckets alone) may write to the access-log bucket."""
    return _tls_only(
        "AccessLogBucket",
        [
            {
                "Sid": "S3DeliversAccessLogs",
                "Effect": "Allow",
                "Principal": {"Service": "logging.s3.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": {"Fn::Join": ["", [att("AccessLogBucket", "Arn"), "/*"]]},
                "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
            }
        ],
    )
