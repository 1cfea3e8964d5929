"""landing_zone_sensor: each delivered object requests exactly one run, across ticks and restarts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from audience_assets.core.config import load_config
from audience_assets.core.settings import Settings
from audience_assets.core.store import LocalStore
from audience_assets.defs.ingest import sensors
from audience_assets.defs.ingest.jobs import FIRST_PARTY_JOB, LANDING_REPORT_JOB, PARTNER_DATA_JOB, SUPPRESSION_JOB
from audience_assets.defs.resources import LocalStorage

# ##### FIXTURES


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path


def drop(root: Path, key: str, content: str = "email\na@example.com\n") -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def tick(root: Path, cursor: str | None, demo_data: bool = False) -> tuple[list[dg.RunRequest], str]:
    """One evaluation of a freshly built sensor (as after a daemon restart) with the stored cursor."""
    from audience_assets.definitions import build_definitions

    defs = build_definitions(Settings(data_dir=root, demo_data=demo_data))
    sensor = defs.resolve_sensor_def("landing_zone_sensor")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(
            cursor=cursor, instance=instance, definitions=defs, resources={"storage": LocalStorage(data_dir=str(root))}
        ) as context:
            result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor


# ##### TESTS


def test_each_new_delivery_requests_one_run_for_its_partition(landing: Path):
    drop(landing, "landing/partners/acme_data/a.csv")
    drop(landing, "landing/partners/beta_insights/b.parquet")
    drop(landing, "landing/first_party/crm.csv")
    drop(landing, "landing/suppression/optouts.csv")
    requests, cursor = tick(landing, None)
    assert sorted((r.job_name, r.partition_key) for r in requests) == sorted(
        [
            (PARTNER_DATA_JOB, "acme_data"),
            (PARTNER_DATA_JOB, "beta_insights"),
            (FIRST_PARTY_JOB, None),
            (SUPPRESSION_JOB, None),
        ]
    )
    assert all(r.run_key.startswith("landing/") and "@" in r.run_key for r in requests)

    for _ in range(3):  # repeated ticks and rebuilt sensors (restarts) with the stored cursor: nothing again
        again, cursor = tick(landing, cursor)
        assert again == []

    drop(landing, "landing/partners/acme_data/a2.csv")
    new, cursor = tick(landing, cursor)
    assert [(r.partition_key, r.run_key.split("@")[0]) for r in new] == [
        ("acme_data", "landing/partners/acme_data/a2.csv")
    ]
    assert tick(landing, cursor)[0] == []


def test_a_reupload_with_new_content_runs_again_an_unchanged_one_never(landing: Path):
    path = drop(landing, "landing/partners/acme_data/a.csv")
    first, cursor = tick(landing, None)
    os.utime(path)  # touched, same content and size: the version is size+mtime locally, so this is "new"
    path.write_text("email\nb@example.com\nc@example.com\n")
    second, cursor = tick(landing, cursor)
    assert len(first) == len(second) == 1 and first[0].run_key != second[0].run_key
    assert tick(landing, cursor)[0] == []


def test_an_empty_file_is_a_delivery_and_unread_objects_are_reported_once(landing: Path):
    """A 0-byte snapshot runs (and fails as an empty file) instead of leaving the previous one in use;
    temporary or hidden names and undeclared partner folders request no ingestion, but one run of the
    landing_zone_report, again only when what is left unread changes."""
    drop(landing, "landing/partners/acme_data/empty.csv", "")
    for name in ("upload.csv.tmp", "x.csv.part", ".hidden.csv", "_SUCCESS_tmp.crdownload", "file.csv~"):
        drop(landing, f"landing/partners/acme_data/{name}")
    drop(landing, "landing/partners/unknown_partner/x.csv")
    requests, cursor = tick(landing, None)
    assert sorted((r.job_name, r.run_key.split("@")[0]) for r in requests) == [
        (LANDING_REPORT_JOB, "landing_zone_report"),
        (PARTNER_DATA_JOB, "landing/partners/acme_data/empty.csv"),
    ]
    assert tick(landing, cursor)[0] == []
    drop(landing, "landing/stray.csv")
    again, cursor = tick(landing, cursor)
    assert [r.job_name for r in again] == [LANDING_REPORT_JOB]
    assert tick(landing, cursor)[0] == []


def test_a_file_moved_in_with_an_old_timestamp_is_still_new(landing: Path):
    drop(landing, "landing/partners/acme_data/a.csv")
    _, cursor = tick(landing, None)
    old = drop(landing, "landing/partners/acme_data/old.csv")
    os.utime(old, (time.time() - 30 * 86400, time.time() - 30 * 86400))  # like `cp -p` of a month-old file
    requests, _ = tick(landing, cursor)
    assert [r.run_key.split("@")[0] for r in requests] == ["landing/partners/acme_data/old.csv"]


def test_a_backlog_drains_over_ticks_without_repeats(landing: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sensors, "MAX_RUNS_PER_TICK", 40)
    for i in range(100):
        drop(landing, f"landing/partners/acme_data/part-{i:04d}.csv")
    seen, cursor, sizes = [], None, []
    for _ in range(5):
        requests, cursor = tick(landing, cursor)
        sizes.append(len(requests))
        seen += [r.run_key for r in requests]
    assert sizes == [40, 40, 20, 0, 0]
    assert len(seen) == len(set(seen)) == 100


def test_cursor_stays_small_after_many_objects(landing: Path):
    cursor = sensors.LandingCursor()
    config = load_config()
    for i in range(50):
        drop(landing, f"landing/partners/acme_data/{i}.csv")
    sensors.new_deliveries(LocalStore(landing), sensors.landing_targets(config), cursor)
    cursor.watermark += sensors.OVERLAP * 2  # time passes: everything falls behind the horizon
    cursor.forget_old()
    assert cursor.recent == {}


def test_loading_the_definitions_writes_nothing_and_the_first_tick_seeds_an_empty_landing_zone(tmp_path: Path):
    """Definitions build without side effects; in local mode with AUDIENCE_DEMO_DATA on, the sensor's first tick
    seeds the demo data into an empty landing zone and requests its ingestion runs; later ticks seed nothing."""
    from audience_assets.definitions import build_definitions

    build_definitions(Settings(data_dir=tmp_path, demo_data=True))
    assert list(tmp_path.iterdir()) == []
    requests, cursor = tick(tmp_path, None, demo_data=True)
    landed = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "landing").rglob("*") if p.is_file())
    assert len(landed) == 4 and len(requests) == 4
    assert {r.tags["audience_assets/object"] for r in requests} == set(landed)
    assert tick(tmp_path, cursor, demo_data=True)[0] == []  # seeded once: nothing new


def test_without_demo_data_an_empty_landing_zone_stays_empty(tmp_path: Path):
    requests, _ = tick(tmp_path, None, demo_data=False)
    assert requests == [] and not (tmp_path / "landing").exists()
