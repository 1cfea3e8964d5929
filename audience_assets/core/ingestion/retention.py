"""Retention: no plaintext file stays in the landing zone longer than its source's `retention_days`
(default `AUDIENCE_RETENTION_DAYS`), and nothing is lost by deleting it.

Everything downstream of ingestion holds only hashes, so the landing zone is the only place plaintext lives.
Once a file is past its retention:

- a snapshot that a newer, accepted snapshot has replaced, a file under an unfinished-upload name, or a file
  nobody declared is deleted (the last accepted delivery is kept while a newer one waits for acceptance);
- the current snapshot is deleted once it has been ingested and published (the delivery record says so);
  its published data stands until the next delivery, and that delivery is still judged against it;
- an opt-out file, once ingested, is first reduced to its hashed form (`staging/suppression/retired.parquet`,
  which every later ingestion adds back), then deleted: an opt-out is never forgotten;
- a file of another incremental source is kept (its rows are part of the current data, and only its plaintext
  can rebuild them) and reported as kept;
- a file not yet ingested and published is kept: deleting it would lose data nobody has seen.

Returns what it deleted and kept (keys and counts, never contents).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from audience_assets.core import layout
from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.deliveries import select_files, skipped_reason
from audience_assets.core.ingestion.guards import previous_delivery, retire
from audience_assets.core.ingestion.inventory import source_prefixes
from audience_assets.core.ingestion.suppression import archive_published_opt_outs
from audience_assets.core.store import Store, StoredObject


@dataclass
class RetentionReport:
    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # key -> why it was kept although past retention
    opt_outs_hashed: int = 0  # hashed opt-out rows now in the retired archive


def apply_retention(
    store: Store,
    config: ProjectConfig,
    *,
    default_days: int,
    now: dt.datetime | None = None,
) -> RetentionReport:
    """Delete the plaintext past retention (see the module docstring)."""
    now = now or dt.datetime.now(dt.UTC)
    report = RetentionReport()
    prefixes = source_prefixes(config)
    by_source: dict[str | None, list[StoredObject]] = {}
    for root in [layout.LANDING_ROOT, *(p for p in prefixes if not p.startswith(layout.LANDING_ROOT))]:
        for obj in store.list(root):
            if obj.key.endswith("/"):
                continue
            source = next((name for prefix, name in prefixes.items() if obj.key.startswith(prefix)), None)
            by_source.setdefault(source, []).append(obj)
    for source, objects in by_source.items():
        contract = config.sources.contract(source) if source else None
        days = contract.retention_days if contract and contract.retention_days is not None else default_days
        expired = [o for o in objects if o.last_modified < now - dt.timedelta(days=days)]
        if not expired:
            continue
        if source is None or contract is None:
            _delete(store, expired, report)
            continue
        record = previous_delivery(store, source)
        newest = select_files(objects, contract.delivery)
        current = {o.key for o in newest}
        # while a newer snapshot waits (held by its guards, or not ingested yet), the accepted one is kept
        accepted_newest = record is not None and all(record.ingested(o.key, o.version) for o in newest)
        waiting = contract.delivery == "snapshot" and not accepted_newest
        doomed = []
        for obj in expired:
            if waiting and record is not None and record.ingested(obj.key, obj.version):
                report.kept[obj.key] = "the last accepted delivery, while a newer one is not accepted yet"
            elif skipped_reason(obj) or obj.key not in current:  # unfinished names; replaced snapshots
                doomed.append(obj)
            elif record is None or not record.ingested(obj.key, obj.version):
                report.kept[obj.key] = "not yet ingested and published (at this version)"
            elif contract.delivery == "snapshot" or source == "suppression":
                doomed.append(obj)
            else:
                report.kept[obj.key] = "an incremental source's rows live only in its files"
        if source == "suppression" and record and any(record.ingested(o.key, o.version) for o in doomed):
            report.opt_outs_hashed = archive_published_opt_outs(store)  # before the plaintext goes
        _delete(store, doomed, report)
        retire(store, source, [o.key for o in doomed])
    return report


def _delete(store: Store, objects: list[StoredObject], report: RetentionReport) -> None:
    for obj in objects:
        store.delete(obj.key)
        report.deleted.append(obj.key)
