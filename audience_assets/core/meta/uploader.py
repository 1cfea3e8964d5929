"""Uploads done exactly right: an upload plan sent to one audience through Meta's upload sessions.

One session per logical upload (per operation: add, remove or replace); `batch_seq` 1..N in chunk
order; `estimated_num_total` on every batch; `last_batch_flag` only on the final batch, sent after all
others are acknowledged. Replace sends batch 1 first and waits for its acknowledgement, sends the rest
in order, and respects the 90-minute window (finishing early and adding the remainder if a replace would
outlive it). Add and remove batches go out with bounded concurrency. Every acknowledged batch is in the
ledger before the next step; an ambiguous failure (timeout, lost connection) is reconciled against
Meta's own session counters before anything is sent again.

An upload has a deadline (`deadline_seconds`, an hour by default): a batch that cannot be acknowledged
before it (Meta keeps throttling) is a dead letter saying so, and the next run sends it again. After a
session's last batch, Meta's own report of the session is polled with back-off until it no longer says
"uploading"; a session Meta leaves open past `settle_seconds` is recorded as such and reported, not
waited on.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from audience_assets.core.audience.plan import Chunk, Kind, Operation, Plan
from audience_assets.core.meta.batches import send_once, send_reconciled
from audience_assets.core.meta.client import GraphClient, JsonText
from audience_assets.core.meta.errors import ErrorClass, MetaApiError, MetaTransportError
from audience_assets.core.meta.ledger import UploadLedger
from audience_assets.core.meta.pacer import DeadlineExceeded
from audience_assets.core.meta.progress import UploadProgress
from audience_assets.core.meta.results import OperationResult, UploadIncomplete, UploadResult
from audience_assets.core.meta.sessions import received_so_far, settle

log = logging.getLogger(__name__)


class NotSent(RuntimeError):
    """A batch the upload did not send because Meta refused an earlier one for good (the token expired or lost
    its rights mid-upload): every later call would be refused the same way."""

    error_class = "not_sent"


REPLACE_WINDOW_SECONDS = 90 * 60
REPLACE_SAFETY_SECONDS = 5 * 60


class AudienceUploader:
    """Runs a `Plan` against one audience, resuming from the ledger."""

    def __init__(
        self,
        client: GraphClient,
        ledger: UploadLedger,
        read_chunk: Callable[[Chunk], JsonText],
        *,
        clock: Callable[[], float] = time.time,
        replace_window_seconds: float = REPLACE_WINDOW_SECONDS,
        reconcile_attempts: int = 6,
        settle_first_seconds: float = 5.0,
        report: Callable[[str], None] | None = None,
        progress_every: float = 30.0,
    ):
        self.client, self.ledger, self.read_chunk = client, ledger, read_chunk
        policy = client.policy  # concurrency, deadline and settle time travel with the client (`MetaPolicy`)
        self.concurrency, self.clock = max(1, policy.concurrency), clock
        self.replace_window = replace_window_seconds
        self.reconcile_attempts = reconcile_attempts
        self.deadline_seconds = policy.deadline_seconds
        self.settle_seconds, self.settle_first = policy.settle_seconds, settle_first_seconds
        self.report = report or log.info
        self.progress_every = progress_every
        self._lock = threading.Lock()
        self._dead_before: set[str] = set()
        self._reasons: dict[str, None] = {}
        self._stopped: str | None = None  # why the upload stopped sending (a refusal no retry can change)
        self.progress: UploadProgress | None = None

    # ------------------------------------------------------------------ public
    def run(self, audience_id: str, plan: Plan) -> UploadResult:
        result = UploadResult(
            audience_id, plan.upload_id, [], batches_planned=sum(len(op.chunks) for op in plan.operations)
        )
        self._dead_before = set(self.ledger.dead_letters())  # chunks an earlier run gave up on: sent again now
        self._reasons, self._stopped = {}, None
        self.progress = UploadProgress(
            f"upload {plan.upload_id[:12]} to audience {audience_id}",
            self.client.pacer,
            self.report,
            batches=result.batches_planned,
            rows=sum(op.rows for op in plan.operations),
            every=self.progress_every,
        )
        self.client.deadline = self.client.clock() + self.deadline_seconds
        try:
            with self.progress.running():
                for operation in plan.operations:
                    if operation.kind == "replace":
                        result.operations.append(self._replace(audience_id, plan, operation))
                    else:
                        result.operations.append(self._add_or_remove(audience_id, plan, operation))
        finally:
            self.client.deadline = None
        result.reasons = list(self._reasons)
        for sid in result.open_sessions:
            self.report(
                f"Meta still reports upload session {sid} of audience {audience_id} as uploading after "
                f"{self.settle_seconds:,.0f} s; it is recorded in the ledger and not waited on"
            )
        if result.dead_letters:
            raise UploadIncomplete(
                f"{result.dead_letters} of {result.batches_planned} batch(es) of upload {plan.upload_id} "
                f"were not acknowledged ({'; '.join(result.reasons)}); they are recorded as dead "
                "letters and the next run re-sends them",
                upload_id=plan.upload_id,
                dead=result.dead_letters,
            )
        self.ledger.complete(
            {"audience_id": audience_id, "operations": [dataclasses.asdict(op) for op in result.operations]}
        )
        return result

    # ------------------------------------------------------------------ helpers
    def _body(
        self, schema: Sequence[str], chunk: Chunk, session_id: int, seq: int, last: bool, total: int
    ) -> dict[str, Any]:
        """A batch as Meta's upload session wants it: its rows (read only now) and its place in the session."""
        session = {"session_id": session_id, "batch_seq": seq, "last_batch_flag": last, "estimated_num_total": total}
        rows = self.read_chunk(chunk)
        return {"payload": {"schema": list(schema), "data": rows, "is_raw": True}, "session": session}

    def _new_session(self, kind: Kind, total: int, replay: bool = False) -> dict[str, Any]:
        session = {
            "session_id": secrets.randbelow(2**62) + 1,
            "started": self.clock(),
            "total": total,
            "finished": False,
            "replay": replay,
        }
        self.ledger.save_session(kind, session)  # durable before the first batch goes out
        return session

    def _record(
        self,
        op: OperationResult,
        kind: Kind,
        chunk: Chunk,
        response: dict[str, Any],
        session_id: int,
        batch_seq: int,
        per_session: bool,
    ) -> None:
        samples = response.get("invalid_entry_samples") or {}
        ack = {
            "session_id": session_id,
            "batch_seq": batch_seq,
            "rows": chunk.rows,
            "num_received": int(response.get("num_received", 0) or 0),
            "num_invalid_entries": int(response.get("num_invalid_entries", 0) or 0),
            "invalid_entry_samples": len(samples),
            "acknowledged_at": self.clock(),
        }
        self.ledger.acknowledge(kind, chunk.index, ack, session_id if per_session else None)
        if self.progress is not None:
            self.progress.acknowledged(chunk.rows)
        if f"{kind}-{chunk.index:06d}" in self._dead_before:
            self.ledger.clear_dead_letter(kind, chunk.index)
        with self._lock:
            op.batches_sent += 1
            op.rows_sent += chunk.rows
            op.invalid_entry_samples += len(samples)
            op.acknowledged_chunks.append(chunk.index)
            op.num_received = max(op.num_received, ack["num_received"])
            op.num_invalid_entries = max(op.num_invalid_entries, ack["num_invalid_entries"])

    def _dead_letter(self, op: OperationResult, kind: Kind, chunk: Chunk, error: Exception) -> None:
        named = getattr(error, "error_class", None)
        error_class = (
            "deadline"
            if isinstance(error, DeadlineExceeded)
            else named
            if isinstance(named, str)
            else getattr(named, "value", "transport")
        )
        details = {
            "error_class": error_class,
            "code": getattr(error, "code", None),
            "subcode": getattr(error, "subcode", None),
            "fbtrace_id": getattr(error, "fbtrace_id", None),
            "message": str(error)[:500],
            "rows": chunk.rows,
            "chunk_key": chunk.key,
        }
        self.ledger.dead_letter(kind, chunk.index, details)
        reason = (
            f"the upload's deadline of {self.deadline_seconds:,.0f} s passed ({error})"
            if isinstance(error, DeadlineExceeded)
            else f"{error_class}: {str(error)[:200]}"
        )
        with self._lock:
            op.dead_letters.append(chunk.index)
            self._reasons.setdefault(reason, None)

    def _stop_if_final(self, error: Exception) -> None:
        """A refusal no retry can change (the token expired, the account lost its rights, code 190, 200...):
        the chunks not sent yet are dead-lettered unsent rather than each refused in turn."""
        if isinstance(error, MetaApiError) and error.error_class is ErrorClass.FATAL and error.code not in (100, 2650):
            self._stopped = f"{error.code}: {str(error)[:200]}"

    def _not_sent(self) -> NotSent:
        """Why a batch after a final refusal is dead-lettered without being sent."""
        return NotSent(f"not sent: the upload stopped after {self._stopped}")

    def _take_resumed(self, op: OperationResult, acked: dict[int, dict[str, Any]]) -> None:
        """Count the batches an earlier run had acknowledged as this run's, so none is sent twice."""
        op.batches_resumed = len(acked)
        op.acknowledged_chunks = sorted(acked)
        if self.progress is not None and acked:
            self.progress.resumed(len(acked), sum(int(a.get("rows", 0)) for a in acked.values()))

    def _close_session(
        self, audience_id: str, op: OperationResult, kind: Kind, session: dict[str, Any], *, settled: bool
    ) -> None:
        """Mark the session finished in the ledger, with Meta's last word on it once its last batch was acknowledged."""
        finished = {**session, "finished": True}
        if settled:
            sid = session["session_id"]
            stage = op.session_stages[sid] = settle(
                self.client, audience_id, sid, first=self.settle_first, limit=self.settle_seconds
            )
            finished["meta_stage"] = stage
        self.ledger.save_session(kind, finished)

    # ------------------------------------------------------------------ add / remove
    def _add_or_remove(self, audience_id: str, plan: Plan, operation: Operation) -> OperationResult:
        """Send the batches not yet acknowledged through one session: all but the last concurrently, the last
        (which closes the session) alone and reconciled, as it must not arrive twice."""
        kind = operation.kind
        op = OperationResult(kind, rows=operation.rows)
        acked = self.ledger.acknowledged(kind)
        for ack in acked.values():
            op.num_received = max(op.num_received, ack.get("num_received", 0))
            op.num_invalid_entries = max(op.num_invalid_entries, ack.get("num_invalid_entries", 0))
        self._take_resumed(op, acked)
        pending = [c for c in operation.chunks if c.index not in acked]
        if not pending:
            return op
        session = self.ledger.session(kind)
        if session is None or session.get("finished"):
            # A fresh session numbers the operation's chunks 1..N; a replay of leftovers numbers them anew.
            session = self._new_session(kind, sum(c.rows for c in pending), replay=bool(acked))
        op.session_ids.append(session["session_id"])
        order = (
            {c.index: n for n, c in enumerate(pending, start=1)}
            if session.get("replay")
            else {c.index: c.index + 1 for c in operation.chunks}
        )
        *middle, last = pending

        def send(chunk: Chunk, final: bool) -> None:
            self._send_batch(audience_id, plan, op, session, chunk, seq=order[chunk.index], final=final)

        if middle:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"meta-{kind}") as pool:
                for future in [pool.submit(send, chunk, False) for chunk in middle]:
                    future.result()
        send(last, True)
        self._close_session(audience_id, op, kind, session, settled=last.index in op.acknowledged_chunks)
        op.acknowledged_chunks.sort()
        return op

    def _send_batch(
        self,
        audience_id: str,
        plan: Plan,
        op: OperationResult,
        session: dict[str, Any],
        chunk: Chunk,
        *,
        seq: int,
        final: bool,
    ) -> None:
        """One add or remove batch: acknowledged into the ledger, or dead-lettered with why (never raised, so
        the other threads' batches go on)."""
        kind = op.kind
        if self._stopped is not None:
            self._dead_letter(op, kind, chunk, self._not_sent())
            return
        body = self._body(plan.schema, chunk, session["session_id"], seq, final, session["total"])
        try:
            if final:
                before = received_so_far(self.client, audience_id, session["session_id"])
                response = send_reconciled(
                    self.client,
                    audience_id,
                    kind,
                    body,
                    received_before=before,
                    rows=chunk.rows,
                    attempts=self.reconcile_attempts,
                )
            else:
                response = send_once(self.client, audience_id, kind, body, idempotent=True)
        except (MetaApiError, MetaTransportError, DeadlineExceeded) as error:
            self._stop_if_final(error)
            self._dead_letter(op, kind, chunk, error)
            return
        self._record(op, kind, chunk, response, session["session_id"], seq, per_session=False)

    # ------------------------------------------------------------------ replace
    def _replace(self, audience_id: str, plan: Plan, operation: Operation) -> OperationResult:
        """Replace through one session resumed within its window (or a new one), then add what it did not carry."""
        op = OperationResult("replace", rows=operation.rows)
        session = self.ledger.session("replace")
        now = self.clock()
        if session and session.get("finished"):
            acked = self.ledger.acknowledged("replace", session["session_id"])
            self._take_resumed(op, acked)
            op.session_ids.append(session["session_id"])
            return self._finish_with_add(audience_id, plan, operation, op, set(acked))
        resuming = session is not None and now - session["started"] <= self.replace_window - REPLACE_SAFETY_SECONDS
        if not resuming:
            session = self._new_session("replace", operation.rows)
        assert session is not None
        sid = session["session_id"]
        op.session_ids.append(sid)
        acked = self.ledger.acknowledged("replace", sid)
        self._take_resumed(op, acked)
        if not self._send_replace_batches(audience_id, plan, operation, op, session, acked, resuming=resuming):
            return op  # the deadline passed: the session stays open, the next run resumes it within its window
        if self._stopped is not None:  # the session stays open: a run with a working token resumes it in its window
            return op
        self._close_session(audience_id, op, "replace", session, settled=True)
        done = set(self.ledger.acknowledged("replace", sid))
        return self._finish_with_add(audience_id, plan, operation, op, done)

    def _send_replace_batches(
        self,
        audience_id: str,
        plan: Plan,
        operation: Operation,
        op: OperationResult,
        session: dict[str, Any],
        acked: dict[int, dict[str, Any]],
        *,
        resuming: bool,
    ) -> bool:
        """Send the replace's batches in order, each acknowledged before the next, closing the session early when
        its window runs out; False when the upload's deadline passed."""
        received = sum(a["rows"] for a in acked.values())
        for chunk in operation.chunks:
            if chunk.index in acked:
                continue
            if self._stopped is not None:
                self._dead_letter(op, "replace", chunk, self._not_sent())
                continue
            is_last = chunk.index == operation.chunks[-1].index
            out_of_time = self.clock() - session["started"] > self.replace_window - REPLACE_SAFETY_SECONDS
            last = is_last or out_of_time
            body = self._body(plan.schema, chunk, session["session_id"], chunk.index + 1, last, operation.rows)
            try:
                response = send_reconciled(
                    self.client,
                    audience_id,
                    "replace",
                    body,
                    received_before=received,
                    rows=chunk.rows,
                    check_first=resuming,
                    attempts=self.reconcile_attempts,
                )
            except DeadlineExceeded as error:  # the session stays open: the next run resumes it within its window
                self._dead_letter(op, "replace", chunk, error)
                return False
            except MetaApiError as error:  # refused for good: the session is left to its 90-minute window
                self._stop_if_final(error)
                if self._stopped is None:
                    raise
                self._dead_letter(op, "replace", chunk, error)
                continue
            resuming = False
            self._record(op, "replace", chunk, response, session["session_id"], chunk.index + 1, per_session=True)
            received += chunk.rows
            if out_of_time:
                break
        return True

    def _finish_with_add(
        self, audience_id: str, plan: Plan, operation: Operation, op: OperationResult, replaced: set[int]
    ) -> OperationResult:
        """Chunks the replace session did not carry (its 90-minute window closed first) join through an
        add session: Meta's documented way to complete a replace that ran out of time."""
        rest = Operation("add", tuple(c for c in operation.chunks if c.index not in replaced))
        if rest.chunks:
            op.absorb(self._add_or_remove(audience_id, plan, rest))
        op.acknowledged_chunks.sort()
        return op
