"""What counts as a delivery in the landing zone: a file directly under its source's prefix (or in a sub-folder
of it, where the source declares `subfolders: true`), under a name that does not mark an unfinished or hidden
upload. Which deliveries make up a source's current data is decided by their arrival (`arrivals`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from audience_assets.core.config import FileContract
from audience_assets.core.store import StoredObject

TEMPORARY_NAME = re.compile(r"(^|/)[._][^/]*$|(\.tmp|\.part|\.crdownload|\.partial|~)$|_\$folder\$$", re.IGNORECASE)


def skipped_reason(obj: StoredObject, prefix: str = "", contract: FileContract | None = None) -> str | None:
    """Why a landing object under `prefix` is not a delivery of the source `contract` describes, or None for a
    delivery. An empty file counts (a newest snapshot of 0 bytes is a broken export, reported as such, not a
    reason to keep reading the one before)."""
    if obj.key.endswith("/") or obj.key.endswith("_$folder$"):
        return "folder marker"
    if TEMPORARY_NAME.search(obj.key):
        return "temporary, hidden or partial upload name"
    if contract is not None and not contract.subfolders and "/" in obj.key[len(prefix) :]:
        return f"in a sub-folder of {prefix} (sources read only their own folder unless they declare subfolders: true)"
    return None


def deliveries(objects: Iterable[StoredObject], prefix: str, contract: FileContract) -> list[StoredObject]:
    """The deliveries among a source's objects (see `skipped_reason`)."""
    return [o for o in objects if skipped_reason(o, prefix, contract) is None]
