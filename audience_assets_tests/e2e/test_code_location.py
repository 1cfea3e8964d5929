"""The code location loads as Dagster's own command loads it, in a subprocess: locally without writing anything
(the demo command then seeds an empty folder), and in aws mode with every variable a dummy value, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from audience_assets_tests.conftest import REPO, clean_env, make_dagster_home


def test_validating_the_code_location_writes_nothing_and_demo_seeds_an_empty_folder(tmp_path: Path):
    """`dagster definitions validate` loads the location without writing (no demo data in the working
    directory); `python -m audience_assets demo` then seeds an empty folder and says so."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = clean_env(DAGSTER_HOME=str(make_dagster_home(tmp_path / "home")))
    validated = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "audience_assets.definitions"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert list(cwd.iterdir()) == [], "loading the code location wrote files"
    seeded = subprocess.run(
        [sys.executable, "-m", "audience_assets", "demo"],
        cwd=cwd,
        env={**env, "AUDIENCE_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert seeded.returncode == 0 and "written to" in seeded.stdout, seeded.stdout + seeded.stderr
    assert len([p for p in (tmp_path / "data" / "landing").rglob("*") if p.is_file()]) == 4


def test_dagster_definitions_validate_passes_in_aws_mode(tmp_path):
    """The production configuration: aws mode, every variable set to a dummy value, no network."""
    env = {
        **os.environ,
        "AUDIENCE_ASSETS_ENV": "aws",
        "AUDIENCE_BUCKET": "dummy-bucket",
        "AUDIENCE_KMS_KEY_ID": "alias/dummy",
        "META_ACCESS_TOKEN_SECRET_ID": "dummy/meta-token",
        "META_AD_ACCOUNT_ID": "act_123",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CLEANROOMS_MEMBERSHIP_ID": "00000000-0000-4000-8000-000000000000",
        "AUDIENCE_RESULTS_BUCKET": "dummy-results",
        "AUDIENCE_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "data").exists(), "aws mode writes nothing locally when definitions load"
