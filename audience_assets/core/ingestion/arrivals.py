"""Which of a source's files make up its current data, decided by the order they arrived in, never by their
timestamps or folders.

A file's timestamps say little about when it was delivered: housekeeping moves an ingested export into
`processed/`, `chmod` touches its ctime, `rsync -t` carries the sender's clock (and its skew). So each source
keeps an arrival log (`staging/arrivals/<source>.json`): every delivery the pipeline has seen, by its content
identity (the S3 ETag; locally the SHA-256 of its bytes, computed once per size and mtime), with the order
and the moment it was first seen. From that log:

- a snapshot source's current file is the latest arrival, as long as it is still there. An older delivery
  never becomes current again: moved, renamed, touched or dated in the future, it is the same content,
  already seen and superseded (reported as not read, with the reason);
- an incremental source's current data is every delivery still there, each content once (a copy under
  another name adds nothing twice);
- files first seen together are ordered by the time the store gives them, a time in the future counting as
  now; that time (so capped) is also when the file arrived, from which retention counts its age.

Only the ingestion step (and retention) write the log; the sensor and the landing-zone report read it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from audience_assets.core import layout
from audience_assets.core.config import FileContract
from audience_assets.core.ingestion.deliveries import deliveries
from audience_assets.core.store import Store, StoredObject

KEEP_GONE_DAYS = 400  # how long the identity of a delivery no longer in the landing zone is remembered


@dataclasses.dataclass(frozen=True)
class Arrival:
    key: str  # where it was first seen
    seq: int  # arrival order: 1, 2, ...
    first_seen: str  # ISO 8601, UTC


@dataclasses.dataclass
class Current:
    """A source's current data and what else its prefix holds that is not read (key -> reason)."""

    files: list[StoredObject]
    not_read: dict[str, str]


@dataclasses.dataclass
class ArrivalLog:
    source: str
    arrivals: dict[str, Arrival] = dataclasses.field(default_factory=dict)  # content identity -> arrival
    identities: dict[str, str] = dataclasses.field(default_factory=dict)  # "<key>@<version>" -> identity
    next_seq: int = 1

    @classmethod
    def load(cls, store: Store, source: str) -> ArrivalLog:
        raw = store.get_bytes(layout.arrival_log(source))
        if raw is None:
            return cls(source)
        data = json.loads(raw)
        arrivals = {identity: Arrival(**entry) for identity, entry in data.get("arrivals", {}).items()}
        return cls(source, arrivals, data.get("identities", {}), int(data.get("next_seq", len(arrivals) + 1)))

    def save(self, store: Store) -> None:
        document = {
            "source": self.source,
            "next_seq": self.next_seq,
            "arrivals": {k: dataclasses.asdict(v) for k, v in sorted(self.arrivals.items(), key=lambda i: i[1].seq)},
            "identities": dict(sorted(self.identities.items())),
        }
        store.put_bytes(layout.arrival_log(self.source), json.dumps(document, indent=1).encode())

    def identity(self, obj: StoredObject) -> str | None:
        """The content identity this log knows for the object at its current version (None: not seen yet)."""
        return self.identities.get(f"{obj.key}@{obj.version}")

    def observe(
        self, objects: Sequence[StoredObject], identify: Callable[[StoredObject], str], now: dt.datetime
    ) -> None:
        """Log every object not seen at its version before: its content identity (`identify`), and, for content
        never seen, its arrival: after every arrival logged before, and among those first seen now in order of
        the time the store gives (S3: the upload; locally: the later of mtime and ctime, so a file moved in with
        an old mtime has just arrived), never later than `now`. Forgets versions no longer present, and
        deliveries gone for `KEEP_GONE_DAYS`."""
        new: list[tuple[dt.datetime, str, str]] = []
        present = {f"{o.key}@{o.version}" for o in objects}
        for obj in objects:
            version = f"{obj.key}@{obj.version}"
            if version not in self.identities:
                self.identities[version] = identify(obj)
            identity = self.identities[version]
            if identity not in self.arrivals and all(identity != n[2] for n in new):
                new.append((min(obj.last_modified, now), obj.key, identity))
        for arrived, key, identity in sorted(new):
            self.arrivals[identity] = Arrival(key, self.next_seq, arrived.isoformat(timespec="seconds"))
            self.next_seq += 1
        self.identities = {v: i for v, i in self.identities.items() if v in present}
        still_here = set(self.identities.values())
        horizon = (now - dt.timedelta(days=KEEP_GONE_DAYS)).isoformat(timespec="seconds")
        self.arrivals = {i: a for i, a in self.arrivals.items() if i in still_here or a.first_seen >= horizon}

    def current(self, objects: Iterable[StoredObject], delivery: str) -> Current:
        """The source's current files among `objects` (its deliveries, all observed), and why the rest are not."""
        first: dict[str, StoredObject] = {}  # identity -> the file that carries it (its first key when present)
        not_read: dict[str, str] = {}
        for obj in sorted(objects, key=lambda o: o.key):
            identity = self.identity(obj)
            if identity is None or identity not in self.arrivals:
                continue  # not observed yet (the landing report reads the log as it stands): read next time
            held = first.get(identity)
            if held is None or obj.key == self.arrivals[identity].key:
                if held is not None:
                    not_read[held.key] = f"the same content as {obj.key}, delivered before: read once"
                first[identity] = obj
            else:
                not_read[obj.key] = f"the same content as {held.key}, delivered before: read once"
        ordered = sorted(first.items(), key=lambda item: self.arrivals[item[0]].seq)
        if delivery != "snapshot":
            return Current([obj for _, obj in ordered], not_read)
        latest = max(self.arrivals.values(), key=lambda a: a.seq, default=None)
        files = [obj for identity, obj in ordered if latest is not None and self.arrivals[identity] == latest]
        for identity, obj in ordered:
            if not files or obj is not files[0]:
                not_read[obj.key] = _superseded(self.arrivals[identity], latest)
        return Current(files, not_read)


def _superseded(arrival: Arrival, latest: Arrival | None) -> str:
    later = f"{latest.key}, first seen {latest.first_seen}" if latest else "a later delivery"
    return (
        f"an older snapshot (first seen {arrival.first_seen}), superseded by {later}: an old delivery never "
        "becomes current again, whatever its timestamps or folder"
    )


def content_identity(store: Store, obj: StoredObject) -> str:
    """What a delivery's content is known by: the ETag S3 computed, or the SHA-256 of the local file's bytes."""
    if store.content_addressed:
        return f"etag:{obj.version}"
    with store.local_copy(obj.key) as path:
        return "sha256:" + _sha256(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def observed(
    store: Store, source: str, deliveries: Sequence[StoredObject], now: dt.datetime | None = None
) -> ArrivalLog:
    """The source's arrival log with `deliveries` observed, saved when anything changed."""
    log = ArrivalLog.load(store, source)
    before = json.dumps([dataclasses.asdict(log)], sort_keys=True, default=str)
    log.observe(deliveries, lambda obj: content_identity(store, obj), now or dt.datetime.now(dt.UTC))
    if json.dumps([dataclasses.asdict(log)], sort_keys=True, default=str) != before:
        log.save(store)
    return log


def current_files(
    store: Store, source: str, prefix: str, contract: FileContract, now: dt.datetime | None = None
) -> Current:
    """The source's current data: its deliveries under `prefix` observed into its arrival log, then chosen by
    arrival (see the module docstring)."""
    found = deliveries(store.list(prefix), prefix, contract)
    return observed(store, source, found, now).current(found, contract.delivery)
