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

A file's age counts from its arrival (`arrivals`: when its content was first seen), so a future modification
time cannot keep it forever and a `touch` cannot keep it longer. Every file is judged before any is deleted;
a symbolic link is deleted as the link, never its target; a file that cannot be deleted is reported and the
others still go. Returns what it deleted, kept and failed to delete (keys and counts, never contents).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field

from audience_assets.core import layout
from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.arrivals import ArrivalLog, observed
from audience_assets.core.ingestion.deliveries import deliveries, skipped_reason
from audience_assets.core.ingestion.guards import previous_delivery, retire
from audience_assets.core.ingestion.inventory import source_prefixes
from audience_assets.core.ingestion.suppression import archive_published_opt_outs
from audience_assets.core.locks import LockBusy
from audience_assets.core.store import Store, StoredObject


@dataclass
class RetentionReport:
    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # key -> why it was kept although past retention
    failed: dict[str, str] = field(default_factory=dict)  # key -> why deleting it failed (the rest went on)
    opt_outs_hashed: int = 0  # hashed opt-out rows now in the retired archive


def apply_retention(
    store: Store,
    config: ProjectConfig,
    *,
    default_days: int,
    now: dt.datetime | None = None,
) -> RetentionReport:
    """Delete the plaintext past retention (see the module docstring): every file is judged first, then the
    doomed ones are deleted one by one; a file that cannot be deleted is reported and the others still go."""
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
        tenant = config.tenant_of_partner(source) if source in config.partners else config.deployment_tenant
        owned = store.tagged(tenant=tenant)  # what it rewrites (records, logs, archives) is the source's tenant's
        try:
            with owned.lock(f"source-{source}") if source else contextlib.nullcontext():  # not while it is ingested
                source, doomed, archive = _judge(owned, config, source, objects, default_days, now, report)
                if archive:
                    report.opt_outs_hashed = archive_published_opt_outs(owned)  # before the plaintext goes
                deleted = _delete(owned, doomed, report)
                if source is not None:
                    retire(owned, source, deleted)
        except LockBusy as busy:
            report.kept.update({o.key: f"its source is being ingested now ({busy}); judged next time" for o in objects})
    return report


def _judge(
    store: Store,
    config: ProjectConfig,
    source: str | None,
    objects: list[StoredObject],
    default_days: int,
    now: dt.datetime,
    report: RetentionReport,
) -> tuple[str | None, list[StoredObject], bool]:
    """(source, the files to delete, whether opt-outs must be archived first); what is kept goes into `report`."""
    contract = config.sources.contract(source) if source else None
    days = contract.retention_days if contract and contract.retention_days is not None else default_days
    horizon = now - dt.timedelta(days=days)
    if source is None or contract is None:  # outside every source: judged by age alone
        return source, [o for o in objects if min(o.last_modified, now) < horizon], False
    prefix = next(p for p, name in source_prefixes(config).items() if name == source)
    found = deliveries(objects, prefix, contract)
    log = observed(store, source, found, now)
    current = {o.key for o in log.current(found, contract.delivery).files}
    record = previous_delivery(store, source)
    # while a newer snapshot waits (held by its guards, or not ingested yet), the accepted one is kept
    accepted_current = record is not None and all(record.ingested(o.key, o.version) for o in found if o.key in current)
    waiting = contract.delivery == "snapshot" and not accepted_current
    doomed = []
    for obj in objects:
        if _arrived(log, obj, now) >= horizon:
            continue
        if waiting and record is not None and record.ingested(obj.key, obj.version):
            report.kept[obj.key] = "the last accepted delivery, while a newer one is not accepted yet"
        elif skipped_reason(obj, prefix, contract) or obj.key not in current:  # unread; replaced snapshots
            doomed.append(obj)
        elif record is None or not record.ingested(obj.key, obj.version):
            report.kept[obj.key] = "not yet ingested and published (at this version)"
        elif contract.delivery == "snapshot" or source == "suppression":
            doomed.append(obj)
        else:
            report.kept[obj.key] = "an incremental source's rows live only in its files"
    archive = source == "suppression" and record is not None and any(record.ingested(o.key, o.version) for o in doomed)
    return source, doomed, archive


def _arrived(log: ArrivalLog, obj: StoredObject, now: dt.datetime) -> dt.datetime:
    """When a file arrived: when its content was first seen, else its modification time (never in the future)."""
    identity = log.identity(obj)
    arrival = log.arrivals.get(identity) if identity else None
    return dt.datetime.fromisoformat(arrival.first_seen) if arrival else min(obj.last_modified, now)


def _delete(store: Store, objects: list[StoredObject], report: RetentionReport) -> list[str]:
    deleted = []
    for obj in objects:
        try:
            store.delete(obj.key)
        except (OSError, ValueError) as error:
            report.failed[obj.key] = f"{type(error).__name__}: {error}"
            continue
        report.deleted.append(obj.key)
        deleted.append(obj.key)
    return deleted
