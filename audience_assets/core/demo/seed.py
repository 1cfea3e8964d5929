"""Seeding the demo data: an empty local landing zone gets it exactly once, whoever asks first."""

from __future__ import annotations

import fcntl
from pathlib import Path

from audience_assets.core.demo.generator import generate


def ensure_demo_data(data_dir: Path) -> bool:
    """Write the demo landing zone under `data_dir` if no file has ever landed there; True if it did.

    Several processes load the definitions at once (`dagster dev` runs a webserver, a daemon and code
    servers), so a lock file makes exactly one of them write while the others wait."""
    landing = data_dir / "landing"
    if landing.is_dir() and any(p.is_file() for p in landing.rglob("*")):
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if landing.is_dir() and any(p.is_file() for p in landing.rglob("*")):
            return False
        generate(data_dir)
        return True
