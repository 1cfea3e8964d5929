"""Delivering an audience's upload plan: chunks stored, the audience found or created, rows uploaded,
and what Meta now holds recorded. The assets call this; so do the crash and fault tests.

The plan document (`audiences/<audience>/upload_plan.json`) names each chunk's object key and row count;
`deliver` resumes whatever an earlier run of the same plan acknowledged (see `meta.ledger`), and only
after every chunk is acknowledged folds them into `meta/<audience>/confirmed.parquet`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from audience_assets import layout
from audience_assets.audience import Plan, read_chunk_rows, update_confirmed
from audience_assets.config import Audience
from audience_assets.duck import connect
from audience_assets.meta.client import GraphClient
from audience_assets.meta.ledger import UploadLedger
from audience_assets.meta.sync import AudienceManager, AudienceUploader, Chunk, Operation, UploadPlan, UploadResult
from audience_assets.resources.storage import Storage


@dataclasses.dataclass(frozen=True)
class Delivery:
    audience_id: str
    created: bool
    result: UploadResult
    state: dict[str, Any]  # the audience as Meta describes it after the upload


@contextlib.contextmanager
def optional_copy(storage: Storage, key: str) -> Iterator[Path | None]:
    """A local copy of `key`, or None when it does not exist yet."""
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(storage.local_copy(key))
        except FileNotFoundError:
            path = None
        yield path


def store_plan(storage: Storage, audience: str, *, mode: str, keys: Sequence[str], plan: Plan) -> dict[str, Any]:
    """Upload the plan's chunk files and write the plan document; returns the document."""
    operations = []
    for op in plan.operations:
        chunks = []
        for chunk in op.chunks:
            key = layout.chunk(audience, plan.upload_id, op.kind, chunk.index)
            storage.upload(chunk.path, key)
            chunks.append({"index": chunk.index, "rows": chunk.rows, "key": key, "digest": chunk.digest})
        operations.append({"kind": op.kind, "rows": op.rows, "chunks": chunks})
    document = {"audience": audience, "mode": mode, "upload_id": plan.upload_id, "schema": list(keys),
                "desired_rows": plan.desired_rows, "confirmed_rows": plan.confirmed_rows, "operations": operations}
    storage.put_bytes(layout.upload_plan(audience), json.dumps(document, indent=1).encode())
    return document


def load_plan(storage: Storage, audience: str) -> UploadPlan | None:
    raw = storage.get_bytes(layout.upload_plan(audience))
    if raw is None:
        return None
    document = json.loads(raw)
    return UploadPlan(document["upload_id"], tuple(document["schema"]), tuple(
        Operation(op["kind"], tuple(Chunk(c["index"], c["rows"], c["key"]) for c in op["chunks"]))
        for op in document["operations"]))


def deliver(storage: Storage, audience: str, spec: Audience, plan: UploadPlan, client: GraphClient, *,
            ad_account_id: str, concurrency: int = 4, extra_fields: Sequence[str] = ()) -> Delivery:
    """Find or create the Meta audience, preflight it, upload the plan (resuming), record what Meta holds.

    Raises `UploadIncomplete` when batches exhausted their retries (they are dead-lettered in the
    ledger and the next run of the same plan re-sends exactly those)."""
    manager = AudienceManager(client, ad_account_id)
    audience_id, created = manager.ensure(spec.meta_name, description=spec.description,
                                          customer_file_source=spec.customer_file_source,
                                          retention_days=spec.retention_days)
    manager.preflight(audience_id)

    def read_chunk(chunk: Chunk) -> list[list[Any]]:
        with storage.local_copy(chunk.key) as path, connect() as con:
            return read_chunk_rows(con, path, plan.schema)

    uploader = AudienceUploader(client, UploadLedger(storage, audience, plan.upload_id), read_chunk,
                                concurrency=concurrency)
    result = uploader.run(audience_id, plan)
    record_confirmed(storage, audience, plan)
    return Delivery(audience_id, created, result, manager.read(audience_id, extra_fields))


def record_confirmed(storage: Storage, audience: str, plan: UploadPlan) -> int:
    """Fold the plan's chunks into `meta/<audience>/confirmed.parquet`: what Meta now holds."""
    with tempfile.TemporaryDirectory(prefix="aa-confirmed-") as tmp, connect(Path(tmp)) as con, \
            contextlib.ExitStack() as stack:
        confirmed = stack.enter_context(optional_copy(storage, layout.confirmed(audience)))
        acknowledged = {op.kind: [stack.enter_context(storage.local_copy(c.key)) for c in op.chunks]
                        for op in plan.operations}
        out = Path(tmp) / "confirmed.parquet"
        rows = update_confirmed(con, keys=plan.schema, confirmed=confirmed, acknowledged=acknowledged, out=out)
        storage.upload(out, layout.confirmed(audience))
        return rows
