"""The pipeline benchmark still runs end to end (a tiny size: it measures nothing here, it only must work)."""

from __future__ import annotations

import os
import subprocess
import sys

from audience_assets_tests.conftest import REPO

STAGES = (
    "first_party_customers",
    "suppression_list",
    "clean_room_first_party_table",
    "partner_data",
    "clean_room_matches",
    "audience_selection",  # audience_members and audience_holdout, one step
    "audience_chunks",
    "meta_custom_audience",
)


def test_the_pipeline_benchmark_runs_every_stage_on_generated_data(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "pipeline.py"), "--rows", "20000", "--no-record"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert set(STAGES) <= set(table), done.stdout
    reference = next(v for k, v in table.items() if k.startswith("reference CPU work"))
    assert float(reference.split("|")[2]) > 0  # the machine's speed of the moment is recorded beside the times
    rows = next(line for line in done.stdout.splitlines() if line.startswith("Rows per stage"))
    assert "first_party_customers 20,000" in rows and "clean_room_first_party_table 20,000" in rows
