"""What counts as a delivery in the landing zone, and which files make up a source's current data."""

from __future__ import annotations

import re
from collections.abc import Iterable

from audience_assets.core.store import StoredObject

TEMPORARY_NAME = re.compile(r"(^|/)[._][^/]*$|(\.tmp|\.part|\.crdownload|\.partial|~)$|_\$folder\$$", re.IGNORECASE)


def is_delivery(obj: StoredObject) -> bool:
    """A real delivered file: not a zero-byte folder marker, not a temporary or hidden name."""
    return obj.size > 0 and not obj.key.endswith("/") and not TEMPORARY_NAME.search(obj.key)


def select_files(objects: Iterable[StoredObject], delivery: str) -> list[StoredObject]:
    """The files that make up the current data: the newest one for a snapshot, all for incremental."""
    files = sorted((o for o in objects if is_delivery(o)), key=lambda o: (o.last_modified, o.key))
    return files[-1:] if delivery == "snapshot" else files
