"""One writer at a time: a named lock per source (ingestion, retention) and per audience (its plan, its upload),
held in the store itself so every process of a deployment sees it.

Two runs writing one audience at once could create two Meta audiences of one name or interleave one upload
ledger; two ingestions of one source could publish each other's half. So a step takes the lock of what it
writes, waits for it up to `wait_seconds` (`AUDIENCE_LOCK_WAIT_SECONDS`), and otherwise fails naming who
holds it and since when; nothing was written.

- Locally: `flock` on `<data dir>/.aa-locks/<name>.lock`. The kernel releases it when the holding process dies,
  however it dies, so a killed run never leaves a lock behind.
- On S3: a lease object `locks/<name>.json`, created with a conditional write (`If-None-Match: *`: S3 refuses a
  second writer), renewed while held (`If-Match` its ETag), deleted when done. A lease not renewed for
  `LEASE_SECONDS` (its holder died) is taken over, again by a conditional write, so two runs never both win.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LEASE_SECONDS = 600.0  # an S3 lease its holder stopped renewing is free after this long
POLL_SECONDS = 0.5


class LockBusy(RuntimeError):
    """Another run holds the lock; the message names it and what to do. Nothing was written."""


def holder(owner: str) -> dict[str, Any]:
    """Who takes a lock: the run (`owner`), the host and process, and since when."""
    return {
        "owner": owner or "-",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def busy(name: str, held: dict[str, Any] | None, waited: float) -> LockBusy:
    who = (
        f"run {held.get('owner', '-')} (process {held.get('pid', '?')} on {held.get('host', '?')}, since "
        f"{held.get('since', '?')})"
        if held
        else "another run"
    )
    return LockBusy(
        f"{name} is being written by {who}; waited {waited:,.0f} s. This step wrote nothing: run it again once "
        "that run has finished (AUDIENCE_LOCK_WAIT_SECONDS sets how long a step waits)"
    )


@contextlib.contextmanager
def file_lock(path: Path, name: str, *, wait_seconds: float, owner: str = "") -> Iterator[None]:
    """An exclusive `flock` on `path`, waited for up to `wait_seconds`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= wait_seconds:
                    raise busy(name, _read_holder(path), waited) from None
                time.sleep(min(POLL_SECONDS, max(0.01, wait_seconds - waited)))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder(owner)).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text() or "null")
    return None


class S3Lease:
    """The S3 side of `S3Store.lock`: conditional writes on one small object. `put(body, if_none_match, if_match)`
    returns the new ETag or None when S3 refused the precondition; `get()` returns (body, etag) or None;
    `delete(if_match)` removes the lease."""

    def __init__(
        self,
        name: str,
        put: Callable[..., str | None],
        get: Callable[[], tuple[dict[str, Any], str] | None],
        delete: Callable[[str], None],
        *,
        lease_seconds: float = LEASE_SECONDS,
    ):
        self.name, self._put, self._get, self._delete = name, put, get, delete
        self.lease_seconds = lease_seconds

    def _body(self, owner: str) -> dict[str, Any]:
        return {**holder(owner), "expires": time.time() + self.lease_seconds}

    @contextlib.contextmanager
    def held(self, *, wait_seconds: float, owner: str = "") -> Iterator[None]:
        started = time.monotonic()
        while True:
            etag = self._put(self._body(owner), if_none_match=True)
            if etag is None:
                current = self._get()
                if current is not None and current[0].get("expires", 0) < time.time():
                    etag = self._put(self._body(owner), if_match=current[1])  # a dead holder's lease: taken over
            if etag is not None:
                break
            waited = time.monotonic() - started
            if waited >= wait_seconds:
                current = self._get()
                raise busy(self.name, current[0] if current else None, waited)
            time.sleep(min(POLL_SECONDS * 4, max(0.01, wait_seconds - waited)))
        tag, stop = [etag], threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_seconds / 3):
                renewed = self._put(self._body(owner), if_match=tag[0])
                if renewed is None:
                    return  # lost (held past its lease without renewing): the next conditional write will say so
                tag[0] = renewed

        renewer = threading.Thread(target=renew, name=f"lease-{self.name}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            with contextlib.suppress(Exception):
                self._delete(tag[0])
