"""Scratch space: one root the project owns, private to its user, swept of what dead processes left behind.

Steps stage plaintext on local disk (a CRM export's rows as Parquet before they are hashed, S3 downloads,
DuckDB spill files). A step that finishes removes its folder; a step killed with SIGKILL cannot. So every
scratch folder lives under one root (`AUDIENCE_SCRATCH_DIR`, default `<system temp>/audience_assets-<uid>`,
mode 0700) and carries its process id in its name, and `sweep()` (at the start of every step) removes the
folders of processes that no longer run, whatever their age, and reports what is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from audience_assets.core.processes import alive
from audience_assets.core.settings import scratch_root_variable


def root() -> Path:
    """The scratch root, created 0700; refused if another user owns it or it is a symbolic link."""
    configured = scratch_root_variable()
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / f"audience_assets-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"scratch root {path} must be a directory owned by this user (not a link)")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)
    return path


@contextlib.contextmanager
def scratch(purpose: str) -> Iterator[Path]:
    """A private folder for one piece of work, removed when it ends (and by `sweep` if the process dies)."""
    with tempfile.TemporaryDirectory(prefix=f"aa-{os.getpid()}-{purpose}-", dir=root()) as folder:
        yield Path(folder)


@dataclass(frozen=True)
class Sweep:
    removed: int  # folders of dead processes removed now
    removed_bytes: int
    remaining: int  # folders of running processes (this one included)
    remaining_bytes: int
    oldest_seconds: float  # age of the oldest remaining folder

    def metadata(self) -> dict[str, float | int]:
        return {
            "scratch/swept_folders": self.removed,
            "scratch/swept_bytes": self.removed_bytes,
            "scratch/folders": self.remaining,
            "scratch/bytes": self.remaining_bytes,
            "scratch/oldest_seconds": round(self.oldest_seconds, 1),
        }


def sweep(now: float | None = None) -> Sweep:
    """Remove every scratch folder whose process is gone; measure the rest."""
    now = time.time() if now is None else now
    removed = removed_bytes = remaining = remaining_bytes = 0
    oldest = 0.0
    for entry in root().iterdir():
        pid = _owner(entry.name)
        size = _size(entry)
        if pid is not None and not alive(pid):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed, removed_bytes = removed + 1, removed_bytes + size
            continue
        remaining, remaining_bytes = remaining + 1, remaining_bytes + size
        with contextlib.suppress(FileNotFoundError):
            oldest = max(oldest, now - entry.stat().st_mtime)
    return Sweep(removed, removed_bytes, remaining, remaining_bytes, oldest)


def _owner(name: str) -> int | None:
    parts = name.split("-")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "aa" and parts[1].isdigit() else None


def _size(path: Path) -> int:
    if not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            return path.stat().st_size
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += (Path(folder) / name).lstat().st_size
    return total
