"""One small world for every whole-pipeline test: a demo landing zone run once, by README's headless command,
into the built-in Meta sandbox (the session fixture `baseline` in conftest, built by whichever xdist worker asks
first while the others wait), copied per test (`world`, or `landing` for a test that needs a first run of its
own), and helpers to change a delivery, run again and read what Meta holds."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
from filelock import FileLock

from audience_assets.core.config import load_config
from audience_assets.core.demo import generate
from audience_assets.core.settings import Settings
from audience_assets.headless import run_pipeline
from audience_assets.standins.graph_sandbox import GraphSandbox
from audience_assets_tests.conftest import REPO, clean_env, copy_config, make_dagster_home

CHUNK_ROWS = {"travel_enthusiasts": 500}  # small chunks so one audience spans several requests


def once(root: Path, build) -> Path:
    """`build(root)` done once per session: the first caller builds, later callers (other xdist workers) wait on
    the lock and find it ready."""
    with FileLock(f"{root}.lock"):
        if not (root / "ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            build(root)
            (root / "ready").touch()
    return root


def make_landing(root: Path) -> None:
    """The world's landing zone alone (`root/data/landing`), for tests whose first run is their own: they need
    not wait for the world's run."""
    generate(root / "data", customers=10_000, seed=3)


def make_baseline(root: Path) -> None:
    """The world: its landing zone run through README's headless command. Its run's console output and Dagster
    home are kept for the tests that read them."""
    make_landing(root)
    config_dir = world_config(root / "config")
    home = make_dagster_home(root / "dagster_home")
    env = clean_env(AUDIENCE_DATA_DIR=str(root / "data"), AUDIENCE_CONFIG_DIR=str(config_dir), DAGSTER_HOME=str(home))
    done = subprocess.run(
        [sys.executable, "-m", "audience_assets", "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    (root / "stdout.txt").write_text(done.stdout)
    (root / "stderr.txt").write_text(done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


def copy_world(baseline: Path, target: Path) -> dict:
    """A copy of the baseline's landing zone, outputs and Meta sandbox, and what Meta held in it."""
    shutil.copytree(baseline / "data", target / "data")
    shutil.copytree(baseline / "config", target / "config")
    config = load_config(target / "config")
    return {"data": target / "data", "config_dir": target / "config", "config": config, "held": meta(target)}


def copy_landing(landing: Path, data: Path) -> Path:
    """The world's landing zone (the `landing` fixture) as `data`'s, nothing run yet."""
    shutil.copytree(landing / "data" / "landing", data / "landing")
    return data


def world_config(target: Path, audiences_patch: dict | None = None) -> Path:
    """The world's config (the package's, with its chunk sizes) copied to `target`, with audience settings patched."""
    patch = {a: {"chunk_rows": n} for a, n in CHUNK_ROWS.items()}
    for name, changes in (audiences_patch or {}).items():
        patch[name] = {**patch.get(name, {}), **changes}
    return copy_config(target, patch)


def run(data: Path, config_dir: Path, out: io.StringIO, instance=None, settings: dict | None = None, **options) -> bool:
    resolved = Settings(data_dir=data, config_dir=config_dir, demo_data=False, **(settings or {}))
    if instance is not None:
        return run_pipeline(resolved, instance, out=out, **options)
    with dg.DagsterInstance.ephemeral() as ephemeral:
        return run_pipeline(resolved, ephemeral, out=out, **options)


def sandbox(root: Path) -> GraphSandbox:
    return GraphSandbox(root / "data" / "meta_sandbox" / "graph.sqlite")


def meta(root: Path) -> dict[str, frozenset[str] | None]:
    """Every audience's members as the Meta sandbox holds them (None: the audience does not exist there)."""
    config = load_config(root / "config")
    held_by = sandbox(root)
    try:
        held = {}
        for name, spec in config.audiences.items():
            audience_id = held_by.audience_id(spec.meta_name)
            held[name] = frozenset(held_by.member_keys(audience_id)) if audience_id else None
        return held
    finally:
        held_by.close()


def crm_file(data: Path) -> Path:
    return next((data / "landing" / "first_party").glob("*.csv"))


def partner_file(data: Path, partner: str = "acme_data") -> Path:
    return next((data / "landing" / "partners" / partner).glob("*.csv"))


def newer(path: Path, text: bytes) -> Path:
    """Deliver `text` as the partner's newest snapshot (a later name and a later modification time)."""
    later = path.with_name("z_" + path.name)
    later.write_bytes(text)
    stamp = path.stat().st_mtime + 60
    os.utime(later, (stamp, stamp))
    return later


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def check_results(instance: dg.DagsterInstance, asset: str, check: str) -> dict[str, object]:
    """partition -> the latest evaluation of `check` on `asset` (passed, severity, description, metadata)."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    found: dict[str, object] = {}
    for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=100):
        event = record.event.dagster_event if record.event else None
        if event is None or event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        evaluation = event.asset_check_evaluation_data
        if evaluation.partition not in found:
            found[evaluation.partition] = evaluation
    return found
