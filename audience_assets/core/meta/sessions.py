"""Meta's own report of an upload session (`GET /{audience}/sessions`): how many rows it received, and its
stage. Read to reconcile a batch whose answer was lost, and, after the last batch, to wait (bounded) for
Meta to close the session."""

from __future__ import annotations

import logging
from typing import Any

from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.errors import MetaApiError, MetaTransportError
from audience_assets.core.meta.pacer import DeadlineExceeded
from audience_assets.core.meta.results import OPEN_SESSION_STAGES

log = logging.getLogger(__name__)


def session_state(client: GraphClient, audience_id: str, session_id: int) -> dict[str, Any] | None:
    data = client.get(f"{audience_id}/sessions", session_id=str(session_id)).get("data", [])
    return next((s for s in data if str(s.get("session_id")) == str(session_id)), None)


def received_so_far(client: GraphClient, audience_id: str, session_id: int) -> int:
    state = session_state(client, audience_id, session_id)
    return int(state["num_received"]) if state else 0


def batch_arrived(
    client: GraphClient, audience_id: str, session_id: int, received_before: int, rows: int
) -> dict[str, Any] | None:
    """Whether Meta's session counter shows the batch: `received_before + rows` means it arrived,
    `received_before` means it did not; anything else cannot be decided safely."""
    state = session_state(client, audience_id, session_id)
    received = int(state["num_received"]) if state else 0
    if state is not None and received == received_before + rows:
        return {
            "num_received": received,
            "num_invalid_entries": int(state.get("num_invalid_entries", 0)),
            "session_id": str(session_id),
            "reconciled": True,
        }
    if received != received_before:
        raise MetaApiError(
            f"session {session_id} reports {received} rows received, expected {received_before} "
            f"or {received_before + rows}: cannot tell whether the batch arrived, so it is not sent again"
        )
    return None


def settle(client: GraphClient, audience_id: str, session_id: int, *, first: float, limit: float) -> str:
    """Meta's last word on a session whose last batch was acknowledged: polled with back-off (from
    `first` seconds, doubling to a minute) while it says "uploading", for `limit` seconds at most;
    a session still open then is left to Meta (it closes sessions itself) and reported."""
    pause, waited = first, 0.0
    while True:
        try:
            state = session_state(client, audience_id, session_id)
        except (MetaApiError, MetaTransportError, DeadlineExceeded) as error:
            log.warning("could not read session %s of audience %s: %s", session_id, audience_id, error)
            return "unknown"
        stage = str((state or {}).get("stage") or "unknown").lower()
        if stage not in OPEN_SESSION_STAGES or waited + pause > limit:
            return stage
        try:
            client.pacer.wait(pause, f"Meta still reports session {session_id} {stage}", client.deadline)
        except DeadlineExceeded:
            return stage
        waited += pause
        pause = min(pause * 2, 60.0)
