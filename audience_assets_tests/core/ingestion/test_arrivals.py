"""The arrival log decides a source's current files by the order they arrived in: timestamps, folders and
names cannot make an old delivery current again (`core.ingestion.arrivals`)."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from audience_assets.core.config import FileContract
from audience_assets.core.ingestion.arrivals import ArrivalLog, current_files
from audience_assets.core.store import LocalStore, StoredObject

PREFIX = "landing/first_party/"
SNAPSHOT, INCREMENTAL = FileContract(), FileContract(delivery="incremental")


def deliver(root: Path, name: str, text: str, mtime: float | None = None) -> Path:
    path = root / PREFIX / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def keys(current) -> list[str]:
    return [o.key.removeprefix(PREFIX) for o in current.files]


def test_the_latest_arrival_is_current_whatever_the_clocks_say(tmp_path: Path):
    store = LocalStore(tmp_path)
    old = deliver(tmp_path, "a.csv", "id\n1\n")
    assert keys(current_files(store, "first_party", PREFIX, SNAPSHOT)) == ["a.csv"]
    deliver(tmp_path, "b.csv", "id\n2\n", mtime=time.time() - 86_400)  # arrives later, dated a day earlier
    assert keys(current_files(store, "first_party", PREFIX, SNAPSHOT)) == ["b.csv"]

    future = time.time() + 30 * 86_400
    os.utime(old, (future, future))  # a sender's clock, rsync -t
    old.chmod(0o600)
    now = current_files(store, "first_party", PREFIX, SNAPSHOT)
    assert keys(now) == ["b.csv"] and "superseded by landing/first_party/b.csv" in now.not_read[PREFIX + "a.csv"]
    log = ArrivalLog.load(store, "first_party")
    assert [a.key for a in sorted(log.arrivals.values(), key=lambda a: a.seq)] == [PREFIX + "a.csv", PREFIX + "b.csv"]


def test_files_first_seen_together_are_ordered_by_time_a_future_counting_as_now():
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    seen = [  # as the store lists them: key, size, time, version (an S3 upload time, or local mtime/ctime)
        StoredObject(PREFIX + "z_early.csv", 5, now - dt.timedelta(hours=1), "e1"),
        StoredObject(PREFIX + "a_future.csv", 5, now + dt.timedelta(days=1), "e2"),
        StoredObject(PREFIX + "m_now.csv", 5, now - dt.timedelta(minutes=1), "e3"),
    ]
    log = ArrivalLog("first_party")
    log.observe(seen, lambda obj: obj.version, now)
    assert keys(log.current(seen, "snapshot")) == ["a_future.csv"], "the future counts as now: the latest"
    arrivals = sorted(log.arrivals.values(), key=lambda a: a.seq)
    assert [a.key.removeprefix(PREFIX) for a in arrivals] == ["z_early.csv", "m_now.csv", "a_future.csv"]
    assert arrivals[-1].first_seen == now.isoformat(timespec="seconds")
    later = [*seen, StoredObject(PREFIX + "b_old.csv", 5, now - dt.timedelta(days=90), "e4")]
    log.observe(later, lambda obj: obj.version, now + dt.timedelta(hours=1))
    assert keys(log.current(later, "snapshot")) == ["b_old.csv"], "seen later: later, whatever its date"


def test_a_superseded_snapshot_stays_superseded_when_the_latest_goes(tmp_path: Path):
    store = LocalStore(tmp_path)
    deliver(tmp_path, "a.csv", "id\n1\n")
    current_files(store, "first_party", PREFIX, SNAPSHOT)
    latest = deliver(tmp_path, "b.csv", "id\n2\n")
    current_files(store, "first_party", PREFIX, SNAPSHOT)
    latest.unlink()  # deleted, or moved to another folder: nothing current; the accepted delivery stands
    gone = current_files(store, "first_party", PREFIX, SNAPSHOT)
    assert gone.files == [] and "superseded" in gone.not_read[PREFIX + "a.csv"]


def test_content_is_read_once_and_sub_folders_are_not_read(tmp_path: Path):
    store = LocalStore(tmp_path)
    deliver(tmp_path, "day1.csv", "id\n1\n")
    deliver(tmp_path, "day2.csv", "id\n2\n")
    current_files(store, "suppression", PREFIX, INCREMENTAL)
    deliver(tmp_path, "day1_copy.csv", "id\n1\n")  # the same bytes again under another name
    deliver(tmp_path, "processed/day0.csv", "id\n0\n")
    current = current_files(store, "suppression", PREFIX, INCREMENTAL)
    assert keys(current) == ["day1.csv", "day2.csv"]
    assert "same content as landing/first_party/day1.csv" in current.not_read[PREFIX + "day1_copy.csv"]
    assert PREFIX + "processed/day0.csv" not in {o.key for o in current.files}
    everything = current_files(store, "suppression", PREFIX, FileContract(delivery="incremental", subfolders=True))
    assert keys(everything) == ["day1.csv", "day2.csv", "processed/day0.csv"]


def test_a_file_rewritten_in_place_is_a_new_arrival_and_a_touch_is_not(tmp_path: Path):
    store = LocalStore(tmp_path)
    path = deliver(tmp_path, "crm.csv", "id\n1\n")
    deliver(tmp_path, "other.csv", "id\n2\n")
    assert keys(current_files(store, "first_party", PREFIX, SNAPSHOT)) == ["other.csv"]
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert keys(current_files(store, "first_party", PREFIX, SNAPSHOT)) == ["other.csv"], "touched: same content"
    path.write_text("id\n3\n")  # overwritten with a new export under the same name
    assert keys(current_files(store, "first_party", PREFIX, SNAPSHOT)) == ["crm.csv"]
