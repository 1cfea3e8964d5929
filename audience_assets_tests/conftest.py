"""Shared fixtures: an isolated Dagster home, environments for subprocesses, the package config."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from audience_assets.core.config import PACKAGE_CONFIG_DIR
from audience_assets.core.settings import VARIABLES

REPO = Path(__file__).resolve().parents[1]
# Variables a test environment must not inherit from the developer's shell: every one the project reads
# (declared once, in `core.settings.VARIABLES`), and boto3's endpoint and Dagster's home.
LEAKY = (*VARIABLES, "AWS_ENDPOINT_URL", "DAGSTER_HOME")


def make_dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    env.update(overrides)
    return env


def copy_config(target: Path, audiences_patch: dict | None = None) -> Path:
    """The package's config files copied to `target`, with audience settings overridden."""
    import yaml

    shutil.copytree(PACKAGE_CONFIG_DIR, target)
    if audiences_patch:
        path = target / "audiences.yaml"
        data = yaml.safe_load(path.read_text())
        for name, changes in audiences_patch.items():
            data["audiences"][name].update(changes)
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return target


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = make_dagster_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


# ##### S3 AND KMS: a moto server on loopback, spoken to over real HTTP


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    import logging

    from moto.server import ThreadedMotoServer

    from audience_assets_tests.harness import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 call otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> dict[str, str]:
    """A fresh bucket and KMS key on the moto server, with the environment boto3 reads pointing at it."""
    import boto3

    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket = ("audience-" + re.sub("[^a-z0-9]+", "-", request.node.name.lower()))[:60].strip("-")
    boto3.client("s3").create_bucket(Bucket=bucket)
    key_id = boto3.client("kms").create_key(Description="audience_assets test key")["KeyMetadata"]["Arn"]
    return {**env, "AUDIENCE_BUCKET": bucket, "AUDIENCE_KMS_KEY_ID": key_id}


# ##### A WORLD: demo data run once into the Meta sandbox, copied per test (see world.py)


def session_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Under xdist, every worker's base temp dir sits in the session's: what is built there is built once."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The world after its run (read-only)."""
    from audience_assets_tests.world import make_baseline, once

    return once(session_dir(tmp_path_factory, worker_id) / "world", make_baseline)


@pytest.fixture(scope="session")
def landing(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The world's landing zone before any run (read-only; `world.copy_landing` copies it for a test)."""
    from audience_assets_tests.world import make_landing, once

    return once(session_dir(tmp_path_factory, worker_id) / "landing", make_landing)


@pytest.fixture
def world(baseline: Path, tmp_path: Path) -> dict:
    from audience_assets_tests.world import copy_world

    return copy_world(baseline, tmp_path)


# ##### WORKERS AND ORDER: one worker more than cores, the longest tests first (pytest-xdist)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core and one more. The browser test spends most of its minutes waiting on the
    daemon of its `dagster dev` (a backfill's runs launched one stage after another), holding a worker and little
    of a core; the extra worker puts that core to work on the rest of the suite."""
    return (os.cpu_count() or 1) + 1


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under e2e/ (the pipeline, a subprocess, the browser, aws mode on the stand-ins), every test that
    reads the session world (its fixtures generate data and run the pipeline) and every test marked slow is `e2e`, so
    `-m "not e2e"` is the inner loop. Order: the browser test, then the other e2e tests, then the rest, each group
    in its collected order: the workers take the long tests while everything else still waits, and no worker is
    left running one alone at the end."""
    for item in items:
        world = {"baseline", "landing"} & set(getattr(item, "fixturenames", ()))
        if E2E in item.path.parents or world or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.e2e)

    def weight(item: pytest.Item) -> int:
        return 0 if item.path.name == "test_ui_browser.py" else 1 if item.get_closest_marker("e2e") else 2

    items.sort(key=weight)
