"""What an upload did, per operation and in all, as Meta acknowledged it: counts, sessions and their last
reported stage, dead letters and why. No rows, no samples: these reach metadata and the audit record."""

from __future__ import annotations

import dataclasses

from audience_assets.core.audience.plan import Kind

OPEN_SESSION_STAGES = frozenset({"uploading", "processing"})  # what Meta reports while a session is not done


@dataclasses.dataclass
class OperationResult:
    kind: Kind
    session_ids: list[int] = dataclasses.field(default_factory=list)
    rows: int = 0
    rows_sent: int = 0
    batches_sent: int = 0
    batches_resumed: int = 0  # acknowledged by an earlier run, not sent again
    num_received: int = 0
    num_invalid_entries: int = 0
    invalid_entry_samples: int = 0  # counted, never stored
    acknowledged_chunks: list[int] = dataclasses.field(default_factory=list)
    dead_letters: list[int] = dataclasses.field(default_factory=list)
    session_stages: dict[int, str] = dataclasses.field(default_factory=dict)  # Meta's last word on each session

    def absorb(self, added: OperationResult) -> None:
        """Count an add that completed this operation (a replace whose window closed first) as part of it."""
        self.session_ids += added.session_ids
        self.batches_sent += added.batches_sent
        self.batches_resumed += added.batches_resumed
        self.rows_sent += added.rows_sent
        self.acknowledged_chunks = sorted(set(self.acknowledged_chunks) | set(added.acknowledged_chunks))
        self.dead_letters += added.dead_letters
        self.session_stages.update(added.session_stages)


@dataclasses.dataclass
class UploadResult:
    audience_id: str
    upload_id: str
    operations: list[OperationResult]
    batches_planned: int = 0
    reasons: list[str] = dataclasses.field(default_factory=list)  # why batches were dead-lettered (no rows)

    @property
    def dead_letters(self) -> int:
        return sum(len(op.dead_letters) for op in self.operations)

    @property
    def open_sessions(self) -> list[int]:
        """Sessions Meta still reported uploading when the upload stopped waiting for them."""
        return [
            sid for op in self.operations for sid, stage in op.session_stages.items() if stage in OPEN_SESSION_STAGES
        ]


class UploadIncomplete(RuntimeError):
    """Some batches were not acknowledged; they are in the dead-letter record and the ledger resumes."""

    def __init__(self, message: str, *, upload_id: str = "", dead: int = 0):
        super().__init__(message)
        self.upload_id, self.dead = upload_id, dead
