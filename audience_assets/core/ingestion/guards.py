"""Delivery guards: the judgement a careful engineer applies before a delivery replaces the data in use.

A delivery that shrinks sharply against the previous accepted one, quarantines an unusual share of its rows
or holds nothing at all is far more often a broken export than a real change; acting on it would remove real
people from live audiences. So such a delivery is judged *guarded*: its numbers are reported, but it is not
published, and everything downstream keeps using the last accepted delivery until someone accepts the new one
for a run (`accepted=True`) or a healthy delivery arrives. The previous accepted delivery is remembered per
source in the store (`layout.delivery_record`: counts, file names and versions, never data).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from audience_assets.core import layout
from audience_assets.core.config.contracts import DeliveryGuards
from audience_assets.core.findings import Finding
from audience_assets.core.ingestion.read import IngestReport
from audience_assets.core.store import Store


@dataclass(frozen=True)
class AcceptedDelivery:
    """What the store remembers of a source's last accepted delivery."""

    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    files: list[str]
    accepted_at: str
    run_id: str = ""
    accepted_by_tag: bool = False
    file_rows: dict[str, int] = field(default_factory=dict)  # rows accepted per file
    file_versions: dict[str, str] = field(default_factory=dict)  # the version (ETag, size+mtime) ingested
    retired_files: list[str] = field(default_factory=list)  # deleted by retention after this delivery

    def ingested(self, key: str, version: str) -> bool:
        """Whether this delivery published the file `key` at exactly `version` (a file overwritten since is new)."""
        return self.file_versions.get(key) == version

    @property
    def retired(self) -> bool:
        """Every file of this delivery is gone (retention): its published data stands until the next one."""
        return bool(self.files) and set(self.files) <= set(self.retired_files)

    def basis(self, incremental: bool) -> int:
        """What the next delivery is compared with: for an incremental source, what its remaining files held."""
        if not incremental:
            return self.rows_accepted
        return self.rows_accepted - sum(self.file_rows.get(f, 0) for f in self.retired_files)


@dataclass
class Verdict:
    """The guards' judgement of one delivery: `problems` empty means it may be published."""

    source: str
    files: list[str]
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantined_share: float
    previous_accepted: int | None
    shrink: float | None
    guards: DeliveryGuards
    problems: list[str] = field(default_factory=list)
    accepted: bool = False  # the problems were overruled for this run

    @property
    def blocked(self) -> bool:
        return bool(self.problems) and not self.accepted

    def message(self) -> str:
        if not self.problems:
            return f"{self.source}: delivery within its guards"
        head = (
            "published anyway (accepted for this run)" if self.accepted else "not published, downstream keeps the last"
        )
        tail = (
            ""
            if self.accepted
            else (
                " accepted delivery; if the change is real, accept it for one run (run tag "
                f"audience_assets/accept_delivery={self.source}, or `python -m audience_assets run --accept-delivery "
                f"{self.source}`), or change guards: in partners.yaml"
            )
        )
        files = ", ".join(self.files) or "no file"
        return f"{self.source} ({files}): {'; '.join(self.problems)} ({head}{tail})."

    def finding(self) -> Finding:
        return Finding(passed=not self.blocked, blocking=True, message=self.message(), metadata=self.metadata())

    def metadata(self) -> dict[str, object]:
        return {
            "guard/blocked": self.blocked,
            "guard/rows_accepted": self.rows_accepted,
            "guard/previous_rows_accepted": self.previous_accepted if self.previous_accepted is not None else "none",
            "guard/shrink": round(self.shrink, 4) if self.shrink is not None else "none",
            "guard/quarantined_share": round(self.quarantined_share, 4),
            "guard/max_shrink": self.guards.max_shrink,
            "guard/max_quarantine": self.guards.max_quarantine,
            "guard/accepted_by_tag": self.accepted,
        }


def previous_delivery(store: Store, source: str) -> AcceptedDelivery | None:
    raw = store.get_bytes(layout.delivery_record(source))
    return AcceptedDelivery(**json.loads(raw)) if raw else None


def judge_delivery(
    source: str,
    report: IngestReport,
    previous: AcceptedDelivery | None,
    guards: DeliveryGuards,
    *,
    accepted: bool = False,
    incremental: bool = False,
) -> Verdict:
    """Apply the guards. A source that has never delivered anything (no files, nothing accepted before) is not
    judged empty: there is nothing downstream to protect yet. An incremental source is compared with what its
    remaining files held (retention may have retired some; their rows live on in hashed form)."""
    read, ok, bad = report.rows_read, report.rows_accepted, report.rows_quarantined
    share = bad / read if read else 0.0
    basis = previous.basis(incremental) if previous else 0
    shrink = (1 - ok / basis) if basis else None
    verdict = Verdict(
        source, [f.file for f in report.files], read, ok, bad, share, basis if previous else None, shrink, guards
    )
    if ok == 0 and (report.files or basis > 0):  # a source whose every file retention retired is not empty
        if not guards.allow_empty:
            what = "no files" if not report.files else f"{read:,} rows read, none accepted"
            verdict.problems.append(f"empty delivery ({what})")
    elif shrink is not None and shrink > guards.max_shrink:
        verdict.problems.append(
            f"rows accepted fell from {previous.rows_accepted:,} to {ok:,} ({shrink:.1%} fewer; "
            f"max_shrink is {guards.max_shrink:.0%})"
        )
    if read and share > guards.max_quarantine:
        verdict.problems.append(
            f"{bad:,} of {read:,} rows quarantined ({share:.1%}; max_quarantine is {guards.max_quarantine:.0%})"
        )
    verdict.accepted = accepted and bool(verdict.problems)
    return verdict


def remember(
    store: Store,
    source: str,
    report: IngestReport,
    verdict: Verdict,
    run_id: str,
    versions: dict[str, str] | None = None,
) -> None:
    """Record a published delivery as the source's last accepted one (what the next delivery is judged by, and
    what retention may delete: each file at the version that was ingested, `versions`)."""
    record = AcceptedDelivery(
        rows_read=report.rows_read,
        rows_accepted=report.rows_accepted,
        rows_quarantined=report.rows_quarantined,
        files=[f.file for f in report.files],
        accepted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        run_id=run_id,
        accepted_by_tag=verdict.accepted,
        file_rows={f.file: f.rows_accepted for f in report.files},
        file_versions=dict(versions or {}),
    )
    store.put_bytes(layout.delivery_record(source), json.dumps(asdict(record), indent=1).encode())


def retire(store: Store, source: str, keys: list[str]) -> None:
    """Note that retention deleted these files of the source's last accepted delivery."""
    record = previous_delivery(store, source)
    if record is None:
        return
    retired = sorted(set(record.retired_files) | (set(keys) & set(record.files)))
    updated = AcceptedDelivery(**{**asdict(record), "retired_files": retired})
    store.put_bytes(layout.delivery_record(source), json.dumps(asdict(updated), indent=1).encode())
