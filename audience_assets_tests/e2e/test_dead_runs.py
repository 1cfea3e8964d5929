"""A headless run killed mid-way does not stay STARTED forever: the next headless run proves its process is
gone and reports it failed (so the dead-letter sensor and alerts see it); a live run is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from audience_assets.defs.operations.dead_runs import RUNNER_TAG, fail_dead_runs, runner_tag
from audience_assets_tests.conftest import REPO, clean_env, make_dagster_home
from audience_assets_tests.world import copy_landing


def test_a_killed_headless_run_is_marked_failed_by_the_next_one(landing: Path, tmp_path: Path):
    home = make_dagster_home(tmp_path / "dagster_home")
    data = copy_landing(landing, tmp_path / "data")
    process = subprocess.Popen(
        [sys.executable, "-m", "audience_assets", "run"],
        cwd=REPO,
        env=clean_env(AUDIENCE_DATA_DIR=str(data), DAGSTER_HOME=str(home)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        with dg.DagsterInstance.from_config(str(home)) as instance:
            while time.monotonic() < deadline:
                started = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                if started:
                    break
                time.sleep(0.05)
            assert started, "no run started"
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            killed = started[0].dagster_run
            assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED

            alive = instance.add_run(  # a run of this (live) process: left alone
                dg.DagsterRun(job_name="noop", status=dg.DagsterRunStatus.STARTED, tags=runner_tag())
            )
            assert fail_dead_runs(instance) == [killed.run_id]
            assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
            assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
            failures = instance.get_records_for_run(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
            assert "no longer runs" in failures[0].event_log_entry.dagster_event.message
            assert killed.tags[RUNNER_TAG].split(":")[1] == str(process.pid)
    finally:
        if process.poll() is None:
            process.kill()
