"""The upload ledger: a durable, append-only record of every batch Meta acknowledged.

Each acknowledgement is written (one small JSON object) before the next step, in the same object store
as the data (a local folder or S3 with SSE-KMS), so a run that dies at any point resumes exactly where
Meta's acknowledgements end: no acknowledged batch is sent again, no row is skipped.

Layout under `meta/<audience>/<Meta audience id>/uploads/<upload_id>/` (an upload belongs to the Meta audience it
was sent to: a recreated audience starts a ledger of its own):
  sessions/<kind>.json                 the session in use for add / remove / replace
  batches/<kind>[-<session>]-<n>.json  one per acknowledged chunk (replace acks are per session)
  dead_letters/<kind>-<n>.json         chunks that exhausted their retries, with the error (no rows)
  complete.json                        written once every chunk is acknowledged
"""

from __future__ import annotations

import json
from typing import Any

from audience_assets.core import layout
from audience_assets.core.store import Store


class UploadLedger:
    def __init__(self, store: Store, audience: str, audience_id: str, upload_id: str):
        self.store, self.audience, self.upload_id = store, audience, upload_id
        self.audience_id = audience_id
        self.prefix = layout.upload_ledger(audience, audience_id, upload_id)

    def _put(self, key: str, value: dict[str, Any]) -> None:
        self.store.put_bytes(self.prefix + key, json.dumps(value, sort_keys=True).encode())

    def _get(self, key: str) -> dict[str, Any] | None:
        raw = self.store.get_bytes(self.prefix + key)
        return json.loads(raw) if raw else None

    def _all(self, folder: str, startswith: str = "") -> dict[str, dict[str, Any]]:
        found = {}
        for obj in self.store.list(self.prefix + folder):
            name = obj.key.rsplit("/", 1)[-1]
            if name.startswith(startswith) and name.endswith(".json"):
                raw = self.store.get_bytes(obj.key)
                if raw:
                    found[name[:-5]] = json.loads(raw)
        return found

    # sessions
    def session(self, kind: str) -> dict[str, Any] | None:
        return self._get(f"sessions/{kind}.json")

    def save_session(self, kind: str, session: dict[str, Any]) -> None:
        self._put(f"sessions/{kind}.json", session)

    # acknowledgements
    @staticmethod
    def _batch_name(kind: str, index: int, session_id: int | None) -> str:
        return f"{kind}-{session_id}-{index:06d}" if session_id is not None else f"{kind}-{index:06d}"

    def acknowledged(self, kind: str, session_id: int | None = None) -> dict[int, dict[str, Any]]:
        """Chunk index -> acknowledgement, for `kind` (and, for replace, that session only)."""
        start = f"{kind}-{session_id}-" if session_id is not None else f"{kind}-"
        found = self._all("batches/", start)
        return {
            int(name.rsplit("-", 1)[1]): ack
            for name, ack in found.items()
            if session_id is not None or name.count("-") == 1
        }

    def acknowledge(self, kind: str, index: int, ack: dict[str, Any], session_id: int | None = None) -> None:
        self._put(f"batches/{self._batch_name(kind, index, session_id)}.json", ack)

    # dead letters
    def dead_letter(self, kind: str, index: int, error: dict[str, Any]) -> None:
        self._put(
            f"dead_letters/{kind}-{index:06d}.json",
            {
                "audience": self.audience,
                "meta_audience_id": self.audience_id,
                "upload_id": self.upload_id,
                "kind": kind,
                "chunk": index,
                **error,
            },
        )

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        return self._all("dead_letters/")

    def clear_dead_letter(self, kind: str, index: int) -> None:
        self.store.delete(f"{self.prefix}dead_letters/{kind}-{index:06d}.json")

    # completion
    def complete(self, summary: dict[str, Any]) -> None:
        self._put("complete.json", summary)
