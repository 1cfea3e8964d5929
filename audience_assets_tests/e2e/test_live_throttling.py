"""A live-mode run (META_ACCESS_TOKEN set) against a Graph API stand-in that throttles like Meta.

The stand-in is the sandbox served from its own process on loopback with the fault profile of the report
from the field: 15 % of calls refused with 80003 at call_count 100 and an estimate of 0, 5 % failing with
HTTP 500. The README's headless command runs in a subprocess as a user would run it in production (the
token, the ad account and META_GRAPH_URL in the environment; the longest wait scaled down to 2 s so the
test takes no minutes). It is killed once some batches are acknowledged, run again, and must end with
every audience holding exactly its members; a third run sends nothing (to the audiences that are not
replaced on every run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from audience_assets.core.config import load_config
from audience_assets.standins.graph_sandbox import GraphSandbox
from audience_assets_tests import oracle
from audience_assets_tests.conftest import REPO, clean_env, make_dagster_home
from audience_assets_tests.world import copy_landing, world_config

pytestmark = pytest.mark.slow
TOKEN = "live-token-Throttled-5e1"
ACCOUNT = "act_4000000004"
PROFILE = "throttle:0.15,5xx:0.05,regain0,seed:5"


def test_a_throttled_live_run_killed_and_resumed_ends_with_the_exact_sets(landing: Path, tmp_path: Path):
    home = make_dagster_home(tmp_path / "home")
    data = copy_landing(landing, tmp_path / "data")
    config_dir = world_config(
        tmp_path / "config", {a: {"chunk_rows": 200} for a in ("new_parents", "travel_enthusiasts", "young_gamers")}
    )
    state = tmp_path / "graph.sqlite"
    stand_in = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "audience_assets.standins.graph_sandbox",
            "--state",
            str(state),
            "--token",
            TOKEN,
            "--account",
            ACCOUNT,
            "--faults",
            PROFILE,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = stand_in.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        env = clean_env(
            AUDIENCE_DATA_DIR=str(data),
            AUDIENCE_CONFIG_DIR=str(config_dir),
            DAGSTER_HOME=str(home),
            META_ACCESS_TOKEN=TOKEN,
            META_AD_ACCOUNT_ID=ACCOUNT,
            META_GRAPH_URL=url,
            META_THROTTLE_MAX_SECONDS="2",
            META_UPLOAD_DEADLINE_SECONDS="600",
        )
        command = [sys.executable, "-m", "audience_assets", "run"]

        # killed once the uploads are under way
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while len(list((data / "meta").glob("*/*/uploads/*/batches/*.json"))) < 10:
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no batch acknowledged in 5 minutes"
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()

        started = time.monotonic()
        resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert time.monotonic() - started < 300  # bounded: the freeze this guards against never ended

        config = load_config(config_dir)
        expected = oracle.compute(data / "landing", config)
        assert_exact(state, config, expected)

        # nothing changed: a third run sends no row (but the replace audience, which is replaced every run)
        again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for audience in (a for a, spec in config.audiences.items() if spec.mode != "replace"):
                [record] = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey("meta_custom_audience"), asset_partitions=[audience]),
                    limit=1,
                ).records
                assert record.asset_materialization.metadata["rows_sent"].value == 0
        assert_exact(state, config, expected)
    finally:
        stand_in.kill()
        stand_in.wait()


def assert_exact(state: Path, config, expected) -> None:
    sandbox = GraphSandbox(state)
    try:
        for audience, spec in config.audiences.items():
            audience_id = sandbox.audience_id(spec.meta_name, ACCOUNT)
            assert sandbox.member_keys(audience_id) == expected.row_keys(config, audience), audience
        assert sandbox.counter("throttled") > 0 and sandbox.resent_replace_batches() == 0
    finally:
        sandbox.close()
