"""Retention: the advertiser's plaintext CRM exports are deleted once they are older than the retention
period. Everything downstream keeps only hashes, so nothing else holds that plaintext. Opt-out files are
kept: an opt-out is never forgotten."""

from __future__ import annotations

import datetime as dt

from audience_assets.core.store import Store, StoredObject


def expired_exports(store: Store, prefix: str, *, keep_days: int, now: dt.datetime | None = None) -> list[StoredObject]:
    """Objects under `prefix` that landed more than `keep_days` days ago."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=keep_days)
    return [obj for obj in store.list(prefix) if obj.last_modified < cutoff]


def delete_expired_exports(store: Store, prefix: str, *, keep_days: int, now: dt.datetime | None = None) -> list[str]:
    """Delete them; returns the deleted keys."""
    deleted = []
    for obj in expired_exports(store, prefix, keep_days=keep_days, now=now):
        store.delete(obj.key)
        deleted.append(obj.key)
    return deleted
