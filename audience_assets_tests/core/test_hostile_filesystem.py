"""A hostile filesystem: links in the landing zone, a linked landing folder, a full disk, a decompression bomb and
two writers at once. Retention removes links and never their targets and never stops half-way; partial writes
never outlive their writer; a compressed file cannot inflate without bound; one writer at a time."""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import os
import threading
import time
from pathlib import Path

import boto3
import pytest

from audience_assets.core.config import load_config
from audience_assets.core.ingestion.retention import apply_retention
from audience_assets.core.ingestion.scan import FileRejected, InflationLimits, scan_text
from audience_assets.core.locks import LockBusy
from audience_assets.core.store import LocalStore, S3Store

LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def test_retention_deletes_links_never_their_targets_and_goes_on_past_a_failure(tmp_path: Path):
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    folder = data / "landing" / "partners" / "undeclared"
    folder.mkdir(parents=True)
    outside.mkdir()
    (outside / "precious.csv").write_text("email\na@example.com\n")
    (data / "staging").mkdir()
    (data / "staging" / "inside.csv").write_text("not landing data\n")
    os.symlink(outside / "precious.csv", folder / "outside.csv")  # a link out of the data directory
    os.symlink(data / "staging" / "inside.csv", folder / "inside.csv")  # and one to a file inside it
    (folder / "plain.csv").write_text("email\n")
    (folder / "stuck.csv").write_text("email\n")

    class Stubborn(LocalStore):
        def tagged(self, **tags: str) -> LocalStore:  # retention deletes through the source tenant's store
            return Stubborn(self.root, {**self.tags, **tags})

        def delete(self, key: str) -> None:
            if key.endswith("stuck.csv"):
                raise PermissionError(errno.EACCES, "Permission denied")
            super().delete(key)

    report = apply_retention(Stubborn(data), load_config(), default_days=0, now=LATER)
    assert sorted(report.deleted) == [
        f"landing/partners/undeclared/{n}" for n in ("inside.csv", "outside.csv", "plain.csv")
    ]
    assert list(report.failed) == ["landing/partners/undeclared/stuck.csv"]
    assert (outside / "precious.csv").read_text() == "email\na@example.com\n", "a link's target is never deleted"
    assert (data / "staging" / "inside.csv").exists()
    assert not os.path.lexists(folder / "outside.csv") and (folder / "stuck.csv").exists()


def test_a_linked_landing_folder_is_walked_and_link_loops_end(tmp_path: Path):
    drop = tmp_path / "sftp" / "drop"
    (drop / "first_party").mkdir(parents=True)
    (drop / "first_party" / "crm.csv").write_text("customer_id,email\n")
    os.symlink(drop, tmp_path / "sftp" / "drop" / "first_party" / "loop")  # a link back up the tree
    (tmp_path / "data").mkdir()
    os.symlink(drop, tmp_path / "data" / "landing")
    store = LocalStore(tmp_path / "data")
    keys = [o.key for o in store.list("landing/")]
    assert keys == ["landing/first_party/crm.csv"]
    with store.local_copy("landing/first_party/crm.csv") as path:
        assert path.read_text() == "customer_id,email\n"


def test_a_failed_write_leaves_no_partial_file_and_dead_writers_partials_are_swept(tmp_path: Path):
    store = LocalStore(tmp_path)
    (tmp_path / "staging").mkdir()

    def full_disk(handle) -> None:
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        store._write("staging/table.parquet", full_disk)
    assert os.listdir(tmp_path / "staging") == []
    (tmp_path / "staging" / ".aa-tmp-4194303-abc").write_bytes(b"left by a killed process")  # no such pid
    (tmp_path / "staging" / f".aa-tmp-{os.getpid()}-def").write_bytes(b"a write in progress")
    assert store.sweep_partials() == 1
    assert os.listdir(tmp_path / "staging") == [f".aa-tmp-{os.getpid()}-def"]


def test_a_compressed_file_that_inflates_past_its_limits_is_refused_naming_it(tmp_path: Path):
    bomb = tmp_path / "crm.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as handle:
        handle.write(b"email\n")
        for _ in range(90):
            handle.write(b"x@example.com\n" * 65_536)  # 80 MiB of one row over and over: kilobytes compressed
    with pytest.raises(FileRejected, match=r"inflates past .* times its size; at most 100 times"):
        scan_text(bomb, encoding="utf-8")
    with pytest.raises(FileRejected, match="AUDIENCE_MAX_INFLATED_BYTES"):
        scan_text(bomb, encoding="utf-8", limits=InflationLimits(max_bytes=2 << 20, max_ratio=1e9))
    honest = tmp_path / "ok.csv.gz"
    honest.write_bytes(gzip.compress(b"email\n" + b"".join(f"u{i}@example.com\n".encode() for i in range(50_000))))
    assert scan_text(honest, encoding="utf-8").records == 50_001


def hold_and_wait(store_of, name: str) -> None:
    """A lock held by one writer makes a second wait, then fail naming the holder; free, it is taken."""
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with store_of(30).lock(name, owner="run-1"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    started = time.monotonic()
    with pytest.raises(LockBusy, match=rf"{name} is being written by run run-1 \(process {os.getpid()}"):
        with store_of(0.3).lock(name, owner="run-2"):
            pass
    assert 0.3 <= time.monotonic() - started < 5
    release.set()
    thread.join()
    with store_of(5).lock(name, owner="run-2"):
        pass


def test_one_writer_at_a_time_on_a_local_store(tmp_path: Path):
    hold_and_wait(lambda wait: LocalStore(tmp_path, lock_wait_seconds=wait), "audience-travel")


def test_one_writer_at_a_time_on_s3_with_conditional_writes(aws):
    def store_of(wait: float) -> S3Store:
        return S3Store(aws["AUDIENCE_BUCKET"], aws["AUDIENCE_KMS_KEY_ID"], lock_wait_seconds=wait)

    hold_and_wait(store_of, "source-acme_data")
    s3 = boto3.client("s3")
    assert "Contents" not in s3.list_objects_v2(Bucket=aws["AUDIENCE_BUCKET"], Prefix="locks/"), "released"
    # a lease whose holder died (not renewed past its expiry) is taken over
    s3.put_object(
        Bucket=aws["AUDIENCE_BUCKET"],
        Key="locks/source-acme_data.json",
        Body=b'{"owner": "dead", "expires": 0}',
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=aws["AUDIENCE_KMS_KEY_ID"],
    )
    with store_of(1).lock("source-acme_data", owner="run-3"):
        head = s3.head_object(Bucket=aws["AUDIENCE_BUCKET"], Key="locks/source-acme_data.json")
        assert head["ServerSideEncryption"] == "aws:kms"
