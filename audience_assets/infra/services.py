"""Dagster on ECS Fargate, in the generated stack: the webserver and the daemon (each with the code location as a
sidecar on localhost:4000, so neither needs service discovery), a task definition per run that the daemon's
`EcsRunLauncher` starts (deploy/dagster.yaml reads it from `DAGSTER_RUN_TASK_DEFINITION`), and Postgres on RDS
for runs, events and schedules (its password managed by RDS in Secrets Manager, handed to tasks as a secret).
The webserver is not exposed: reach it with `aws ecs execute-command` or a VPN (deploy/README)."""

from __future__ import annotations

from typing import Any

from audience_assets.core.config import ProjectConfig
from audience_assets.infra.cfn import att, join, ref, skip, sub, tags

GRPC = ["--grpc-host", "localhost", "--grpc-port", "4000"]
# the code location's sidecar: a gRPC code server on localhost:4000, beside the webserver and the daemon
CODE_SERVER = (
    "dagster",
    "api",
    "grpc",
    "--module-name",
    "audience_assets.definitions",
    "--host",
    "127.0.0.1",
    "--port",
    "4000",
)
DATABASE = "dagster"


def _environment(config: ProjectConfig) -> list[dict[str, Any]]:
    values: dict[str, Any] = {
        "AUDIENCE_ASSETS_ENV": "aws",
        "AUDIENCE_BUCKET": ref("DataBucket"),
        "AUDIENCE_RESULTS_BUCKET": ref("ResultsBucket"),
        "AUDIENCE_KMS_KEY_ID": att("ProjectKey", "Arn"),
        "AUDIENCE_LANDING_QUEUE_URL": ref("LandingQueue"),
        "CLEANROOMS_MEMBERSHIP_ID": ref("MembershipId"),
        "DAGSTER_PG_HOST": att("Database", "Endpoint.Address"),
        "DAGSTER_PG_DB": DATABASE,
        "DAGSTER_PG_USERNAME": DATABASE,
        "DAGSTER_RUN_TASK_DEFINITION": sub("${AWS::StackName}-run"),
    }
    if not config.multi_tenant:
        values["META_AD_ACCOUNT_ID"] = ref("MetaAdAccountId")
        values["META_ACCESS_TOKEN_SECRET_ID"] = ref("MetaTokenDefault")
    return [{"Name": k, "Value": v} for k, v in sorted(values.items())]


def _container(
    name: str, command: list[str] | None, config: ProjectConfig, *, essential: bool = True
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "Name": name,
        "Image": ref("CodeLocationImage"),
        "Essential": essential,
        "Environment": _environment(config),
        "Secrets": [
            {
                "Name": "DAGSTER_PG_PASSWORD",
                "ValueFrom": join(att("Database", "MasterUserSecret.SecretArn"), ":password::"),
            }
        ],
        "ReadonlyRootFilesystem": False,  # DuckDB spills to TMPDIR inside the container
        "LogConfiguration": {
            "LogDriver": "awslogs",
            "Options": {
                "awslogs-group": ref("LogGroup"),
                "awslogs-region": ref("AWS::Region"),
                "awslogs-stream-prefix": name,
            },
        },
    }
    if command:
        container["Command"] = command
    return container


def _task(family: str, role: str, containers: list[dict[str, Any]], cpu: str, memory: str) -> dict[str, Any]:
    return {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": sub(f"${{AWS::StackName}}-{family}"),
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": cpu,
            "Memory": memory,
            "TaskRoleArn": att(role, "Arn"),
            "ExecutionRoleArn": att("TaskExecutionRole", "Arn"),
            "ContainerDefinitions": containers,
            "Tags": tags(),
        },
        "Metadata": skip(("CKV_AWS_336", "DuckDB spills to disk inside the container: the root filesystem is written")),
    }


def _service(name: str, task: str, *, single: bool = False) -> dict[str, Any]:
    """`single`: never two at once, even while a deployment replaces the task (the Dagster daemon runs alone)."""
    deployment = {"DeploymentConfiguration": {"MinimumHealthyPercent": 0, "MaximumPercent": 100}} if single else {}
    return {
        "Type": "AWS::ECS::Service",
        "Properties": {
            "Cluster": ref("Cluster"),
            "TaskDefinition": ref(task),
            "DesiredCount": 1,
            "LaunchType": "FARGATE",
            "EnableExecuteCommand": True,  # how an operator reaches the webserver (no public endpoint)
            "NetworkConfiguration": {
                "AwsvpcConfiguration": {
                    "AssignPublicIp": "DISABLED",
                    "Subnets": ref("PrivateSubnetIds"),
                    "SecurityGroups": [ref("ServiceSecurityGroup")],
                }
            },
            "PropagateTags": "SERVICE",
            "Tags": tags({"component": name}),
            **deployment,
        },
    }


def services(config: ProjectConfig) -> dict[str, Any]:
    """Every resource Dagster runs on, gathered from the parts that each build one concern."""
    return {**_logs_and_cluster(), **_network(), **_database(), **_dagster(config)}


def _logs_and_cluster() -> dict[str, Any]:
    """The log group every container writes to (kept with the stack's data) and the cluster the tasks run in."""
    return {
        "LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {"RetentionInDays": 365, "KmsKeyId": att("ProjectKey", "Arn")},
        },
        "Cluster": {
            "Type": "AWS::ECS::Cluster",
            "Properties": {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}], "Tags": tags()},
        },
    }


def _network() -> dict[str, Any]:
    """The security groups: the tasks take no inbound traffic and reach out only to HTTPS and the database,
    which is reachable only from the tasks."""
    return {
        "ServiceSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "audience_assets tasks: no inbound traffic; outbound to AWS, Meta and the database",
                "VpcId": ref("VpcId"),
                "SecurityGroupEgress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 443,
                        "ToPort": 443,
                        "CidrIp": "0.0.0.0/0",
                        "Description": "HTTPS to AWS APIs and graph.facebook.com",
                    }
                ],
                "Tags": tags(),
            },
        },
        "ServiceToDatabase": {
            "Type": "AWS::EC2::SecurityGroupEgress",
            "Properties": {
                "GroupId": ref("ServiceSecurityGroup"),
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "DestinationSecurityGroupId": ref("DatabaseSecurityGroup"),
                "Description": "Postgres",
            },
        },
        "DatabaseSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "audience_assets Postgres: reached only from the tasks",
                "VpcId": ref("VpcId"),
                "SecurityGroupIngress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 5432,
                        "ToPort": 5432,
                        "SourceSecurityGroupId": ref("ServiceSecurityGroup"),
                        "Description": "from the tasks",
                    }
                ],
                "Tags": tags(),
            },
        },
    }


def _database() -> dict[str, Any]:
    """Postgres for Dagster's runs, events and schedules, with the subnets it lives in and the role that lets RDS
    publish its enhanced monitoring."""
    return {
        "DatabaseSubnets": {
            "Type": "AWS::RDS::DBSubnetGroup",
            "Properties": {
                "DBSubnetGroupDescription": "audience_assets Postgres",
                "SubnetIds": ref("PrivateSubnetIds"),
                "Tags": tags(),
            },
        },
        "DatabaseMonitoringRole": _database_monitoring_role(),
        "Database": _database_instance(),
    }


def _database_monitoring_role() -> dict[str, Any]:
    """The role RDS assumes to send the instance's enhanced monitoring to CloudWatch."""
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "monitoring.rds.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "ManagedPolicyArns": [
                sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole")
            ],
            "Tags": tags(),
        },
    }


def _database_instance() -> dict[str, Any]:
    """The RDS instance: private, encrypted with the project key, Multi-AZ, backed up, its password managed by RDS."""
    return {
        "Type": "AWS::RDS::DBInstance",
        "DeletionPolicy": "Snapshot",
        "UpdateReplacePolicy": "Snapshot",
        "Properties": {
            "Engine": "postgres",
            "EngineVersion": "17.9",
            "DBInstanceClass": "db.t4g.medium",
            "AllocatedStorage": "50",
            "StorageType": "gp3",
            "DBName": DATABASE,
            "MasterUsername": DATABASE,
            "ManageMasterUserPassword": True,
            "MasterUserSecret": {"KmsKeyId": ref("ProjectKey")},
            "StorageEncrypted": True,
            "KmsKeyId": ref("ProjectKey"),
            "MultiAZ": True,
            "DBSubnetGroupName": ref("DatabaseSubnets"),
            "VPCSecurityGroups": [ref("DatabaseSecurityGroup")],
            "PubliclyAccessible": False,
            "BackupRetentionPeriod": 14,
            "DeletionProtection": True,
            "CopyTagsToSnapshot": True,
            "AutoMinorVersionUpgrade": True,
            "EnableCloudwatchLogsExports": ["postgresql", "upgrade"],
            "MonitoringInterval": 60,
            "MonitoringRoleArn": att("DatabaseMonitoringRole", "Arn"),
            "EnablePerformanceInsights": True,
            "PerformanceInsightsKMSKeyId": ref("ProjectKey"),
            "Tags": tags(),
        },
        "Metadata": skip(
            ("CKV_AWS_161", "Dagster's Postgres storage connects with a password (RDS-managed), not IAM tokens"),
        ),
    }


def _dagster(config: ProjectConfig) -> dict[str, Any]:
    """The webserver and the daemon as services, each beside its own code server, and the task each run starts."""
    code_server = [*CODE_SERVER]
    return {
        "WebserverTask": _task(
            "webserver",
            "CodeServerRole",
            [
                _container("webserver", ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", *GRPC], config),
                _container("code_location", code_server, config),
            ],
            "1024",
            "2048",
        ),
        "DaemonTask": _task(
            "daemon",
            "CodeServerRole",
            [
                _container("daemon", ["dagster-daemon", "run", *GRPC], config),
                _container("code_location", code_server, config),
            ],
            "1024",
            "2048",
        ),
        "RunTask": _task("run", "RunRole", [_container("audience_assets", None, config)], "2048", "4096"),
        "WebserverService": _service("webserver", "WebserverTask"),
        "DaemonService": _service("daemon", "DaemonTask", single=True),
    }
