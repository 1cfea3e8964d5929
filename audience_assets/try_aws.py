"""`python -m audience_assets try-aws`: aws mode without an AWS account. The demo data goes through the deployed
stack on the stand-ins (`standins.aws`: moto and the Clean Rooms API stand-in on 127.0.0.1), to audiences on the
Meta sandbox, as a deployment's runs would take it. Needs the dev extra (moto)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import boto3
import dagster as dg

from audience_assets.core.config import load_config
from audience_assets.core.demo import generate
from audience_assets.core.settings import Settings, environment
from audience_assets.headless import run_pipeline
from audience_assets.standins.aws import AD_ACCOUNT, aws_world
from audience_assets.standins.graph_sandbox import GraphSandbox, SandboxConfig

TRY_TOKEN = "try-aws-token"


def try_aws(work: Path, out: Any, *, customers: int = 10_000) -> bool:
    """The demo data through aws mode on the stand-ins: the stack deployed, the deliveries landed in its data
    bucket (SSE-KMS under its key), the Meta token in its secret, the whole pipeline run headless with the variables
    the deploy reports; prints what AWS and Meta then hold. True when every step succeeded."""
    from moto.server import ThreadedMotoServer  # the dev extra

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        generate(work / "delivered", customers=customers, seed=7)
        config = load_config()
        with aws_world(config, f"http://127.0.0.1:{port}", "audience-assets-try") as world:
            print(f"stack deployed to the stand-ins: {len(world.stack.physical)} resources", file=out)
            s3, bucket = boto3.client("s3"), world.env["AUDIENCE_BUCKET"]
            for path in sorted(p for p in (work / "delivered" / "landing").rglob("*") if p.is_file()):
                key = path.relative_to(work / "delivered").as_posix()
                s3.upload_file(str(path), bucket, key)  # as a partner delivers: the bucket's default encryption
                print(f"delivered s3://{bucket}/{key}", file=out)
            secret = world.output("MetaTokenDefault")
            boto3.client("secretsmanager").put_secret_value(SecretId=secret, SecretString=TRY_TOKEN)
            meta = GraphSandbox(
                work / "graph.sqlite",
                SandboxConfig(tokens={TRY_TOKEN: ["*"]}, ad_accounts={AD_ACCOUNT: {"name": "advertiser"}}),
            )
            with (
                meta.serve() as graph,
                environment(
                    {
                        **world.env,
                        "META_ACCESS_TOKEN_SECRET_ID": secret,
                        "META_AD_ACCOUNT_ID": AD_ACCOUNT,
                        "META_GRAPH_URL": graph.url,
                        "AUDIENCE_DATA_DIR": str(work / "local"),
                        "AUDIENCE_DEMO_DATA": "0",
                    }
                ),
            ):
                with dg.DagsterInstance.ephemeral() as instance:
                    ok = run_pipeline(Settings.from_env(), instance, out)
            queries = world.clean_rooms.calls.count("StartProtectedQuery")
            print(f"\nprotected queries through the Clean Rooms API: {queries}", file=out)
            for spec in config.audiences.values():
                audience_id = meta.audience_id(spec.meta_name, AD_ACCOUNT)
                size = len(meta.member_keys(audience_id)) if audience_id else 0
                print(f"Meta audience {spec.meta_name!r}: {size} members", file=out)
            meta.close()
        return ok
    finally:
        moto.stop()
