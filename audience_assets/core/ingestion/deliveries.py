"""What counts as a delivery in the landing zone, and which files make up a source's current data."""

from __future__ import annotations

import re
from collections.abc import Iterable

from audience_assets.core.store import StoredObject

TEMPORARY_NAME = re.compile(r"(^|/)[._][^/]*$|(\.tmp|\.part|\.crdownload|\.partial|~)$|_\$folder\$$", re.IGNORECASE)


def is_delivery(obj: StoredObject) -> bool:
    """A delivered file: not a folder marker, not a temporary or hidden name. An empty file counts (a newest
    snapshot of 0 bytes is a broken export, reported as such, not a reason to keep reading the one before)."""
    return skipped_reason(obj) is None


def skipped_reason(obj: StoredObject) -> str | None:
    """Why a landing object is not a delivery, or None for a delivery."""
    if obj.key.endswith("/") or obj.key.endswith("_$folder$"):
        return "folder marker"
    if TEMPORARY_NAME.search(obj.key):
        return "temporary, hidden or partial upload name"
    return None


def select_files(objects: Iterable[StoredObject], delivery: str) -> list[StoredObject]:
    """The files that make up the current data: the newest one for a snapshot, all for incremental."""
    files = sorted((o for o in objects if is_delivery(o)), key=lambda o: (o.last_modified, o.key))
    return files[-1:] if delivery == "snapshot" else files
