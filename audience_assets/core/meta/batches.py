"""How one batch of an upload goes out: once, where sending it again would be harmless, or reconciled
against Meta's own session counter, where it must not arrive twice (a replace's batches, a session's last)."""

from __future__ import annotations

import logging
from typing import Any

from audience_assets.core.audience.plan import Kind
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.errors import MetaTransportError
from audience_assets.core.meta.sessions import batch_arrived

log = logging.getLogger(__name__)


def send_once(
    client: GraphClient, audience_id: str, kind: Kind, body: dict[str, Any], *, idempotent: bool
) -> dict[str, Any]:
    """POST (add, replace) or DELETE (remove) one batch; the client retries a lost answer only if `idempotent`."""
    path = f"{audience_id}/usersreplace" if kind == "replace" else f"{audience_id}/users"
    if kind == "remove":
        return client.delete(path, body, retry_on_timeout=idempotent)
    return client.post(path, body, retry_on_timeout=idempotent)


def send_reconciled(
    client: GraphClient,
    audience_id: str,
    kind: Kind,
    body: dict[str, Any],
    *,
    received_before: int,
    rows: int,
    attempts: int,
    check_first: bool = False,
) -> dict[str, Any]:
    """Send a batch that must not arrive twice, reconciling with Meta after every ambiguous failure
    (and, when resuming after a crash, before the first attempt)."""
    session_id = body["session"]["session_id"]
    if check_first:
        arrived = batch_arrived(client, audience_id, session_id, received_before, rows)
        if arrived:
            return arrived
    for _ in range(attempts):
        try:
            return send_once(client, audience_id, kind, body, idempotent=False)
        except MetaTransportError:
            arrived = batch_arrived(client, audience_id, session_id, received_before, rows)
            if arrived:
                log.info(
                    "batch %s of session %s arrived although its response was lost",
                    body["session"].get("batch_seq"),
                    session_id,
                )
                return arrived
    raise MetaTransportError(f"a batch of session {session_id} failed {attempts} times")
