"""Delivering an audience's stored upload plan: the Meta audience bound and verified (`meta.binding`) and
preflighted, rows uploaded, and what Meta now holds recorded. The assets call this; so do the crash and fault
tests.

`deliver` resumes whatever an earlier run of the same plan acknowledged (see `meta.ledger`), and only after
every chunk is acknowledged folds them into the record of the Meta audience they went to
(`meta/<audience>/<Meta audience id>/confirmed.parquet`), with an audit record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from audience_assets.core import layout
from audience_assets.core.audience.approval import review_removals
from audience_assets.core.audience.confirmed import update_confirmed
from audience_assets.core.audience.plan import Chunk, Plan, read_chunk_json
from audience_assets.core.audience.planning import needs_rebase, rebase
from audience_assets.core.config import Audience
from audience_assets.core.duck import connect, sql_path
from audience_assets.core.meta.binding import Binding, bind
from audience_assets.core.meta.client import GraphClient, JsonText
from audience_assets.core.meta.ledger import UploadLedger
from audience_assets.core.meta.manager import AudienceManager
from audience_assets.core.meta.uploader import AudienceUploader, UploadResult
from audience_assets.core.scratch import scratch
from audience_assets.core.store import Store, optional_copy

log = logging.getLogger(__name__)


class UnrecordedAudience(RuntimeError):
    """A replace into an existing Meta audience of which this deployment has no record: held for approval."""


class RemovalsHeld(RuntimeError):
    """A plan made again at upload time removes more than the audience's max_removal: held for approval."""


@dataclasses.dataclass(frozen=True)
class Delivery:
    audience_id: str
    created: bool
    result: UploadResult
    state: dict[str, Any]  # the audience as Meta describes it after the upload
    binding: Binding | None = None  # which Meta audience was written to, and how it was bound in this sync
    plan: Plan | None = None  # the plan sent (made again when the bound audience changed)


def deliver(
    store: Store,
    audience: str,
    spec: Audience,
    plan: Plan,
    client: GraphClient,
    *,
    ad_account_id: str,
    extra_fields: Sequence[str] = (),
    run_id: str = "",
    report: Callable[[str], None] | None = None,
    approvals: Mapping[str, Any] | None = None,
    approved_removals: bool = False,
) -> Delivery:
    """Bind the Meta audience (verified against Meta: found, created, recreated, renamed or adopted, see
    `core.meta.binding`), preflight it, upload the plan (resuming), record what Meta holds.

    A plan made against another Meta audience's record than the one bound now (the bound audience was deleted,
    or another adopted) is made again against the right record before anything is sent. `report` receives the
    upload's progress lines (at least every 30 s). How many batches fly at once, how long the upload may take
    and how long a populating audience is waited on are the client's `MetaPolicy`. Raises `UploadIncomplete`
    when batches were not acknowledged (retries exhausted, the deadline passed, the token failed): they are
    dead-lettered in the ledger and the next run of the same plan re-sends exactly those. `approvals` (what a
    person approved for this upload) goes into the audit record."""
    started = time.monotonic()
    manager = AudienceManager(client, ad_account_id)
    manager.preflight_account()
    binding = bind(store, manager, audience, spec)
    audience_id = binding.meta_audience_id
    if binding.note:
        write_binding_audit(store, binding, run_id)
        log.warning(binding.note)
    state = manager.preflight_audience(audience_id)
    plan = _current_plan(store, audience, spec, plan, audience_id, approved_removals)
    ledger = UploadLedger(store, audience, audience_id, plan.upload_id)
    _refuse_unrecorded_replace(audience, plan, binding, ledger, state, approved_removals)
    result = _upload(store, client, ledger, audience_id, plan, report)
    confirmed_rows, digests = record_confirmed(store, audience, audience_id, plan)
    state = manager.read_settled(audience_id, extra_fields)
    delivery = Delivery(audience_id, binding.created, result, state, binding, plan)
    write_audit(
        store,
        audience,
        spec.mode,
        plan,
        delivery,
        digests,
        confirmed_rows,
        run_id,
        approvals=approvals or {},
        upload_seconds=time.monotonic() - started,
    )
    return delivery


def _current_plan(
    store: Store, audience: str, spec: Audience, plan: Plan, audience_id: str, approved_removals: bool
) -> Plan:
    """The plan, made again against the bound audience's record when it was made against another's (the bound
    audience was deleted, or another adopted); its removals are reviewed again."""
    if not needs_rebase(store, audience, plan, audience_id):
        return plan
    plan = rebase(store, audience, spec, audience_id)
    review = review_removals(audience, plan, spec.max_removal, {})
    if review.blocked and not approved_removals:
        raise RemovalsHeld(review.message())
    return plan


def _refuse_unrecorded_replace(
    audience: str, plan: Plan, binding: Binding, ledger: UploadLedger, state: Mapping[str, Any], approved: bool
) -> None:
    """A replace into a Meta audience that holds people while nothing this deployment sent to it is on record
    would drop everyone not in the plan: refused unless the run approves removals."""
    held = int(state.get("approximate_count_lower_bound") or -1)
    resuming = ledger.session("replace") is not None  # this plan's own rows
    unrecorded = plan.mode == "replace" and not binding.created and plan.confirmed_rows == 0 and not resuming
    if unrecorded and held > 0 and not approved:
        raise UnrecordedAudience(
            f"{audience}: Meta's audience {binding.meta_audience_id} already holds about {held:,} people, but nothing "
            "this deployment sent to it is on record (no confirmed rows): a replace would drop everyone not in the "
            f"plan. Nothing was sent. If that is meant, approve removals for this run: --approve-removals {audience}"
        )


def _upload(
    store: Store, client: GraphClient, ledger: UploadLedger, audience_id: str, plan: Plan, report: Callable | None
) -> UploadResult:
    """The plan's chunks through upload sessions, each read from the store as JSON by the sending thread."""
    with _connection_per_thread() as connection:

        def read_chunk(chunk: Chunk) -> JsonText:
            with store.local_copy(chunk.key) as path:
                return JsonText(read_chunk_json(connection(), path, plan.schema))

        return AudienceUploader(client, ledger, read_chunk, report=report).run(audience_id, plan)


@contextlib.contextmanager
def _connection_per_thread() -> Iterator[Callable[[], duckdb.DuckDBPyConnection]]:
    """A DuckDB connection for each upload thread, opened on first use and closed at the end: opening
    one costs more than reading a chunk, and a connection must not run two queries at once."""
    local, lock = threading.local(), threading.Lock()
    with contextlib.ExitStack() as stack:

        def connection() -> duckdb.DuckDBPyConnection:
            if not hasattr(local, "con"):
                with lock:
                    local.con = stack.enter_context(connect())
            return local.con

        yield connection


def write_audit(
    store: Store,
    audience: str,
    mode: str,
    plan: Plan,
    delivery: Delivery,
    digests: dict[str, tuple[int, str]],
    confirmed_rows: int,
    run_id: str,
    *,
    approvals: Mapping[str, Any] | None = None,
    upload_seconds: float = 0.0,
) -> str:
    """One append-only audit record per upload: what was sent (counts and a SHA-256 of the sorted row
    ids per operation, never a row), Meta's counts, and who ran it when. Returns its key."""
    now = dt.datetime.now(dt.UTC)
    key = layout.audit(audience, now.strftime("%Y%m%dT%H%M%S%fZ"), delivery.audience_id, plan.upload_id)
    result = delivery.result
    record = {
        "audience": audience,
        "meta_audience_id": delivery.audience_id,
        "ad_account_id": delivery.binding.ad_account_id if delivery.binding else "",
        "mode": mode,
        "upload_id": plan.upload_id,
        "run_id": run_id,
        "recorded_at": now.isoformat(),
        "session_ids": [str(s) for op in result.operations for s in op.session_ids],
        "operations": [
            {"kind": kind, "rows": rows, "row_ids_sha256": digest} for kind, (rows, digest) in digests.items()
        ],
        "meta": {
            "num_received": sum(op.num_received for op in result.operations),
            "num_invalid_entries": sum(op.num_invalid_entries for op in result.operations),
            "invalid_entry_samples": sum(op.invalid_entry_samples for op in result.operations),
            "approximate_count_lower_bound": delivery.state.get("approximate_count_lower_bound"),
            "approximate_count_upper_bound": delivery.state.get("approximate_count_upper_bound"),
        },
        "confirmed_rows_after": confirmed_rows,
        "approvals": dict(approvals or {}),
        "ldu_rows": plan.ldu_rows,  # rows marked Limited Data Use among the audience's desired rows
        # what `plan` estimates the next upload's time from: batches sent and the seconds it took
        "batches_sent": sum(op.batches_sent for op in result.operations),
        "upload_seconds": round(upload_seconds, 2),
    }
    _append(store, key, record)
    return key


def write_binding_audit(store: Store, binding: Binding, run_id: str) -> str:
    """An audit record of a change of the Meta audience bound (created, recreated, renamed, adopted...)."""
    now = dt.datetime.now(dt.UTC)
    key = layout.audit(binding.audience, now.strftime("%Y%m%dT%H%M%S%fZ"), binding.meta_audience_id, "binding")
    _append(store, key, {**binding.document(), "run_id": run_id, "recorded_at": now.isoformat()})
    return key


def _append(store: Store, key: str, record: Mapping[str, Any]) -> None:
    if store.get_bytes(key) is not None:  # append-only: a record is never rewritten
        raise FileExistsError(f"audit record {key} already exists")
    store.put_bytes(key, json.dumps(record, indent=1, sort_keys=True).encode())


def record_confirmed(
    store: Store, audience: str, audience_id: str, plan: Plan
) -> tuple[int, dict[str, tuple[int, str]]]:
    """Fold the plan's chunks into the record of the Meta audience `audience_id` (`layout.confirmed`): what it
    now holds. Returns its row count and, per operation, the rows sent and a SHA-256 of their sorted row ids."""
    with (
        scratch("confirmed") as tmp,
        connect(tmp) as con,
        contextlib.ExitStack() as stack,
    ):
        confirmed = stack.enter_context(optional_copy(store, layout.confirmed(audience, audience_id)))
        acknowledged = {
            op.kind: [stack.enter_context(store.local_copy(c.key)) for c in op.chunks] for op in plan.operations
        }
        out = Path(tmp) / "confirmed.parquet"
        rows = update_confirmed(con, keys=plan.schema, confirmed=confirmed, acknowledged=acknowledged, out=out)
        store.upload(out, layout.confirmed(audience, audience_id))
        digests = {}
        for kind, paths in acknowledged.items():
            files = ", ".join(sql_path(p) for p in paths)
            count, digest = con.execute(
                f"SELECT count(*), sha256(coalesce(string_agg(row_id, ',' ORDER BY row_id), '')) "
                f"FROM read_parquet([{files}])"
            ).fetchall()[0]
            digests[kind] = (int(count), digest)
        return rows, digests


def client_figures(client: GraphClient) -> dict[str, Any]:
    """What the upload cost in calls and waiting (for metadata; no payloads)."""
    return {
        "api_requests": client.stats.requests,
        "api_retries": client.stats.retries,
        "throttled_responses": client.stats.throttled,
        "seconds_waiting": round(client.pacer.waited, 1),
        "longest_wait_seconds": round(client.pacer.longest_wait, 1),
    }


def delivery_figures(delivery: Delivery, audience: Audience, upload_id: str, client: GraphClient) -> dict[str, Any]:
    """An upload's figures as Meta reported them, counts only (never rows or samples), with a one-line summary
    (Markdown) of the audience after the sync."""
    result, state = delivery.result, delivery.state
    operations = result.operations
    received = sum(op.num_received for op in operations)
    invalid = sum(op.num_invalid_entries for op in operations)
    binding = delivery.binding
    metadata: dict[str, Any] = {
        "audience_id": delivery.audience_id,
        "created": delivery.created,
        "binding_event": binding.event if binding else "",
        "binding_note": binding.note if binding else "",
        "previous_audience_id": (binding.previous_id if binding else "") or "none",
        "upload_id": upload_id,
        "mode": audience.mode,
        "rows_sent": sum(op.rows for op in operations),
        **{f"{op.kind}_rows": op.rows for op in operations},
        "num_received": received,
        "num_invalid_entries": invalid,
        "invalid_entry_samples": sum(op.invalid_entry_samples for op in operations),  # a count only
        "session_ids": ", ".join(str(s) for op in operations for s in op.session_ids),
        "batches_planned": result.batches_planned,
        "batches_sent": sum(op.batches_sent for op in operations),
        "batches_resumed": sum(op.batches_resumed for op in operations),
        "sessions": len({s for op in operations for s in op.session_ids}),
        "sessions_left_open": len(result.open_sessions),
        "approximate_count_lower_bound": state.get("approximate_count_lower_bound", -1),
        "approximate_count_upper_bound": state.get("approximate_count_upper_bound", -1),
        "operation_status": (state.get("operation_status") or {}).get("description", ""),
        "operation_status_code": (state.get("operation_status") or {}).get("code", -1),
        "delivery_status": (state.get("delivery_status") or {}).get("description", ""),
        "delivery_status_code": (state.get("delivery_status") or {}).get("code", -1),
        "populating_polls": state.get("populating_polls", 0),
        **client_figures(client),
    }
    if "sandbox_member_count" in state:
        metadata["sandbox_member_count"] = metadata["dagster/row_count"] = state["sandbox_member_count"]
    sent = ", ".join(f"{op.kind} {op.rows:,} rows" for op in operations) or "nothing to send"
    metadata["summary"] = (
        f"**{audience.meta_name}** ({audience.mode}): Meta audience `{delivery.audience_id}`"
        f"{' (created now)' if delivery.created else ''}; {sent}; Meta received {received:,}, rejected {invalid:,}; "
        f"approximate size {metadata['approximate_count_lower_bound']:,}–{metadata['approximate_count_upper_bound']:,}."
    )
    return metadata
