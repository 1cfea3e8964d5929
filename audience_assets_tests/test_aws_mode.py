"""aws mode end to end: the headless pipeline against S3 and KMS on a moto server (real HTTP on
loopback). Every object the pipeline writes must be encrypted with SSE-KMS under the configured key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from audience_assets.demo import generate
from audience_assets_tests.conftest import REPO, clean_env, make_dagster_home

pytestmark = pytest.mark.slow


def test_every_object_the_pipeline_writes_is_sse_kms(tmp_path: Path, aws: dict[str, str]):
    s3 = boto3.client("s3")
    bucket = aws["AUDIENCE_BUCKET"]
    landing = tmp_path / "demo"
    generate(landing, customers=20_000, seed=3)
    delivered = set()
    for path in sorted((landing / "landing").rglob("*")):
        if path.is_file():
            key = path.relative_to(landing).as_posix()
            s3.upload_file(str(path), bucket, key)  # as a partner would: the bucket's default, not ours
            delivered.add(key)

    env = clean_env(**aws, AUDIENCE_ASSETS_ENV="aws", AUDIENCE_DATA_DIR=str(tmp_path / "local"),
                    DAGSTER_HOME=str(make_dagster_home(tmp_path / "dagster_home")))
    done = subprocess.run([sys.executable, "-m", "audience_assets", "run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert not (tmp_path / "local" / "landing").exists(), "aws mode must not seed local demo data"

    written = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
               for o in page.get("Contents", []) if o["Key"] not in delivered]
    areas = {key.split("/")[0] for key in written}
    assert areas == {"staging", "clean_room", "audiences", "meta", "audit"}, areas
    assert len(written) > 20
    for key in written:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == "aws:kms", key
        assert head.get("SSEKMSKeyId") == aws["AUDIENCE_KMS_KEY_ID"], key
