"""What each role of the deployment may do: exactly the calls the code makes, on exactly what it makes them on.

- the run role (a task per Dagster run): the assets and jobs. It reads and writes the key layout's prefixes of
  the data bucket (`core.layout`; the landing zone only read and, by retention, deleted; audit records never
  deleted), reads the results bucket, runs protected queries in the membership (Clean Rooms writes their results
  with the run's identity, through forward access sessions: those writes are allowed only when Clean Rooms makes
  them), reads the Meta tokens, publishes metrics in the project's namespace. `audience_assets_tests` records the
  AWS calls the code makes in aws mode and holds this policy to exactly them;
- the code server's role (sensors and schedules run there): drains the landing queue, lists the landing zone for
  the sweep, reads the arrival logs, records and replays dead-lettered runs;
- Dagster's own needs, apart: step logs in S3 (runs), launching and watching run tasks (the daemon);
- the data-access role Clean Rooms assumes to read the associated tables, and nothing else.
"""

from __future__ import annotations

from typing import Any

from audience_assets.core import layout
from audience_assets.core.cleanroom.tables import FIRST_PARTY_TABLE
from audience_assets.core.config import ProjectConfig
from audience_assets.infra.cfn import allow, arn, att, join, policy

# The top-level prefixes of the data bucket, by what the runs do there (`core.layout`).
READ = [
    layout.LANDING_ROOT,
    "staging/",
    "clean_room/",
    "audiences/",
    "meta/",
    "audit/",
    "reports/",
    layout.DEAD_LETTER_RUNS.split("/")[0] + "/",
    "locks/",
]
WRITE = [p for p in READ if p != layout.LANDING_ROOT]  # runs never write where partners deliver
DELETE = [layout.LANDING_ROOT, "audiences/", "meta/", "locks/", "dead_letters/"]  # retention, plans, records, leases
RESULTS_PREFIX = "results/"
COMPUTE_LOGS = "dagster/compute_logs/"


def objects(bucket: str, prefixes: list[str]) -> list[dict[str, Any]]:
    return [join(att(bucket, "Arn"), f"/{p}*") for p in prefixes]


def listing(bucket: str, prefixes: list[str]) -> dict[str, Any]:
    return {"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}}


def _key_use(sid: str, actions: list[str]) -> dict[str, Any]:
    return allow(sid, actions, att("ProjectKey", "Arn"))


def run_policy(config: ProjectConfig, secrets: list[dict[str, str]]) -> dict[str, Any]:
    membership = "membership/${MembershipId}"
    via_clean_rooms = {"ForAnyValue:StringEquals": {"aws:CalledVia": ["cleanrooms.amazonaws.com"]}}
    return policy(
        allow("ListTheProjectPrefixes", ["s3:ListBucket"], att("DataBucket", "Arn"), listing("DataBucket", READ)),
        allow("ReadTheProject", ["s3:GetObject"], objects("DataBucket", READ)),
        # (no s3:AbortMultipartUpload: an upload interrupted half-way is aborted by the bucket's lifecycle rule)
        allow("WriteOutsideTheLandingZone", ["s3:PutObject", "s3:PutObjectTagging"], objects("DataBucket", WRITE)),
        allow("DeleteWhatRetentionPlansAndRecordsDelete", ["s3:DeleteObject"], objects("DataBucket", DELETE)),
        allow(
            "ListTheResults",
            ["s3:ListBucket"],
            att("ResultsBucket", "Arn"),
            listing("ResultsBucket", [RESULTS_PREFIX]),
        ),
        allow("ReadTheResults", ["s3:GetObject"], objects("ResultsBucket", [RESULTS_PREFIX])),
        allow(
            "CleanRoomsWritesTheResultsForTheRun",
            ["s3:GetBucketLocation", "s3:ListBucket", "s3:PutObject"],
            [att("ResultsBucket", "Arn"), *objects("ResultsBucket", [RESULTS_PREFIX])],
            via_clean_rooms,
        ),
        allow(
            "CleanRoomsEncryptsTheResultsForTheRun",
            ["kms:Encrypt", "kms:GenerateDataKey"],
            att("ProjectKey", "Arn"),
            via_clean_rooms,
        ),
        _key_use("EncryptAndDecryptWithTheProjectKey", ["kms:Decrypt", "kms:GenerateDataKey"]),
        allow(
            "RunProtectedQueriesInTheMembership",
            [
                "cleanrooms:GetProtectedQuery",
                "cleanrooms:ListAnalysisTemplates",
                "cleanrooms:StartProtectedQuery",
                "cleanrooms:UpdateProtectedQuery",
            ],
            [arn("cleanrooms", membership), arn("cleanrooms", f"{membership}/*")],
        ),
        allow("ReadTheMetaTokens", ["secretsmanager:GetSecretValue"], secrets),
        allow(
            "PublishRunMetrics",
            ["cloudwatch:PutMetricData"],
            "*",  # PutMetricData has no resource type: limited by namespace instead
            {"StringEquals": {"cloudwatch:namespace": "AudienceAssets"}},
        ),
    )


def sensor_policy() -> dict[str, Any]:
    watched = [layout.LANDING_ROOT, "staging/arrivals/", "dead_letters/"]
    return policy(
        allow(
            "ListTheLandingZoneAndDeadLetters",
            ["s3:ListBucket"],
            att("DataBucket", "Arn"),
            listing("DataBucket", watched),
        ),
        allow("ReadArrivalLogsAndDeadLetters", ["s3:GetObject"], objects("DataBucket", watched[1:])),
        allow(
            "RecordAndReplayDeadLetters",
            ["s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
            objects("DataBucket", watched[2:]),
        ),
        _key_use("EncryptAndDecryptWithTheProjectKey", ["kms:Decrypt", "kms:GenerateDataKey"]),
        allow(
            "DrainTheLandingQueue",
            ["sqs:DeleteMessage", "sqs:ReceiveMessage"],
            att("LandingQueue", "Arn"),
        ),
    )


def dagster_run_policy() -> dict[str, Any]:
    """Dagster's own writes in a run: step logs (`S3ComputeLogManager`, deploy/dagster.yaml)."""
    return policy(
        allow("WriteStepLogs", ["s3:GetObject", "s3:PutObject"], objects("DataBucket", [COMPUTE_LOGS])),
        allow("ListStepLogs", ["s3:ListBucket"], att("DataBucket", "Arn"), listing("DataBucket", [COMPUTE_LOGS])),
        _key_use("EncryptStepLogs", ["kms:Decrypt", "kms:GenerateDataKey"]),
    )


def dagster_service_policy() -> dict[str, Any]:
    """The daemon launching and watching a task per run (`EcsRunLauncher`), the webserver reading step logs."""
    return policy(
        allow(
            "LaunchAndWatchRunTasks",
            ["ecs:DescribeTasks", "ecs:RunTask", "ecs:StopTask", "ecs:TagResource"],
            [arn("ecs", "task-definition/${AWS::StackName}-run:*"), arn("ecs", "task/${Cluster}/*")],
        ),
        allow("DescribeRunTaskDefinitions", ["ecs:DescribeTaskDefinition"], "*"),  # no resource-level permission
        # EcsRunLauncher gives each run task the daemon's own subnets and security groups, read from its network
        # interface; no resource-level permission
        allow("ReadTheDaemonsNetwork", ["ec2:DescribeNetworkInterfaces"], "*"),
        # ECS Exec (`aws ecs execute-command`, the Session Manager port forward to the UI): the task's own channel
        allow(
            "ExecIntoTheTasks",
            [
                "ssmmessages:CreateControlChannel",
                "ssmmessages:CreateDataChannel",
                "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel",
            ],
            "*",
        ),
        allow(
            "PassTheRunRoles",
            ["iam:PassRole"],
            [att("RunRole", "Arn"), att("TaskExecutionRole", "Arn")],
            {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        ),
        allow("ReadStepLogs", ["s3:GetObject"], objects("DataBucket", [COMPUTE_LOGS])),
        allow("ListStepLogs", ["s3:ListBucket"], att("DataBucket", "Arn"), listing("DataBucket", [COMPUTE_LOGS])),
    )


def execution_policy(secrets: list[dict[str, str]]) -> dict[str, Any]:
    """What ECS needs to start a task: pull the image, write its logs, hand it the database password and tokens."""
    return policy(
        allow(
            "PullTheImage",
            ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            arn("ecr", "repository/*"),
        ),
        allow("AuthenticateToEcr", ["ecr:GetAuthorizationToken"], "*"),  # no resource-level permission
        allow("WriteTaskLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], join(att("LogGroup", "Arn"), ":*")),
        allow(
            "HandOverSecrets",
            ["secretsmanager:GetSecretValue"],
            [*secrets, att("Database", "MasterUserSecret.SecretArn")],
        ),
        _key_use("DecryptTheSecrets", ["kms:Decrypt"]),
    )


def table_prefix(name: str) -> str:
    """The data bucket's prefix holding clean-room table `name` (`first_party` or a partner's)."""
    key = layout.CLEAN_ROOM_FIRST_PARTY if name == FIRST_PARTY_TABLE else layout.partner_table(name)
    return key.rsplit("/", 1)[0] + "/"


def our_tables(config: ProjectConfig) -> list[str]:
    """The clean-room tables this deployment associates: the advertiser's, and each partner's whose files land
    with us (a collaboration member associates its own)."""
    return [FIRST_PARTY_TABLE, *sorted(p for p, c in config.partners.items() if not c.clean_room.member)]


def data_access_policy(config: ProjectConfig) -> dict[str, Any]:
    """What Clean Rooms reads through the associations: the Glue tables and their objects, nothing else."""
    tables = our_tables(config)
    prefixes = [table_prefix(t) for t in tables]
    return policy(
        allow(
            "ReadTheGlueTables",
            ["glue:BatchGetPartition", "glue:GetDatabase", "glue:GetPartition", "glue:GetPartitions", "glue:GetTable"],
            [
                arn("glue", "catalog"),
                arn("glue", "database/${GlueDatabase}"),
                *(arn("glue", f"table/${{GlueDatabase}}/{t}") for t in tables),
            ],
        ),
        allow("ReadTheTables", ["s3:GetObject"], objects("DataBucket", prefixes)),
        allow("ListTheTables", ["s3:ListBucket"], att("DataBucket", "Arn"), listing("DataBucket", prefixes)),
        allow("LocateTheBucket", ["s3:GetBucketLocation"], att("DataBucket", "Arn")),
        _key_use("DecryptTheTables", ["kms:Decrypt"]),
    )
