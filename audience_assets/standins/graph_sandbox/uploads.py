"""What an upload does to the sandbox's state, as Meta's rules say: `/users` adds or removes rows in a session,
`/usersreplace` runs the replace state machine (batch 1 first, the 90-minute window, one replace at a time),
and `/sessions` reports each session's counts and stage."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from audience_assets.standins.graph_sandbox import validation
from audience_assets.standins.graph_sandbox.state import SandboxState
from audience_assets.standins.graph_sandbox.validation import GraphError, parse_payload, parse_session, split_rows

if TYPE_CHECKING:
    from audience_assets.standins.graph_sandbox.config import SandboxConfig


def check_takes_users(config: SandboxConfig, audience: dict[str, Any]) -> None:
    if audience["flagged"]:
        raise GraphError(400, 100, "Invalid parameter", subcode=1713230, error_type="OAuthException")
    if not config.ad_accounts[audience["account"]].get("tos_accepted", True):
        raise GraphError(403, 200, "(#200) Custom Audience Terms Not Accepted", subcode=1870090)
    if audience["subtype"] != "CUSTOM":  # a lookalike too: Meta builds its people from the seed
        raise GraphError(
            400,
            2650,
            "(#2650) Failed to update the custom audience: only customer file (CUSTOM) audiences accept users "
            f"(this one is {audience['subtype']})",
        )


def _payload(
    state: SandboxState, audience: dict[str, Any], params: dict[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    schema, data, source = parse_payload(audience, params)
    if not audience["data_source"]:
        state.set_data_source(audience["id"], source)
    return schema, data


def _answer(audience_id: str, session: dict[str, Any], samples: dict[str, str]) -> dict[str, Any]:
    return {
        "audience_id": audience_id,
        "session_id": session["session_id"],
        "num_received": session["num_received"],
        "num_invalid_entries": session["num_invalid"],
        "invalid_entry_samples": samples,
    }


def users(
    state: SandboxState,
    config: SandboxConfig,
    audience: dict[str, Any],
    params: dict[str, Any],
    prepared: tuple | None,
    remove: bool,
) -> dict[str, Any]:
    check_takes_users(config, audience)
    if state.active_replace(audience["id"]):
        raise GraphError(
            400,
            2650,
            "(#2650) Failed to update the custom audience: an audience update (replace) is in "
            "progress; try again later.",
            subcode=1870145,
        )
    schema, data = _payload(state, audience, params)
    session = parse_session(params, required=False) or {
        "session_id": str(secrets.randbelow(2**62) + 1),
        "batch_seq": None,
        "last": True,
    }
    existing = state.session(audience["id"], session["session_id"])
    if existing is not None and existing["kind"] != ("remove" if remove else "add"):
        raise GraphError(400, 100, f"(#100) Session {session['session_id']} belongs to another operation")
    if existing is not None and existing["finished"]:
        raise GraphError(
            400,
            100,
            f"(#100) The upload session {session['session_id']} has already finished (last_batch_flag was sent)",
        )
    row_keys, invalid, samples, values = split_rows(schema, data, prepared)
    state.change_members(audience["id"], row_keys, remove=remove)
    if audience["is_value_based"] and remove:
        state.drop_values(audience["id"], row_keys)
    elif audience["is_value_based"] and values is not None:
        state.set_values(audience["id"], row_keys, values)
    after = state.record_batch(audience["id"], session, "remove" if remove else "add", len(data), invalid)
    return _answer(audience["id"], after, samples)


def replace(
    state: SandboxState, config: SandboxConfig, audience: dict[str, Any], params: dict[str, Any], prepared: tuple | None
) -> dict[str, Any]:
    check_takes_users(config, audience)
    session = parse_session(params, required=True)
    assert session is not None
    if session["batch_seq"] is None:
        raise GraphError(400, 100, "(#100) Param session[batch_seq] is required for usersreplace")
    sid, seq = session["session_id"], session["batch_seq"]
    existing = state.session(audience["id"], sid)
    active = state.active_replace(audience["id"])
    if existing is not None and existing["kind"] != "replace":
        raise GraphError(400, 100, f"(#100) Session {sid} belongs to another operation")
    if existing is not None and existing["finished"]:
        subcode = 1870158 if existing["finished"] == 2 else 1870159
        what = "timed out (90 minutes)" if existing["finished"] == 2 else "already finished"
        raise GraphError(
            400,
            2650,
            f"(#2650) Failed to update the custom audience: the replace session {sid} {what}.",
            subcode=subcode,
        )
    if seq == 1:
        if active and active["session_id"] != sid:
            raise GraphError(
                400,
                2650,
                "(#2650) Failed to update the custom audience: another replace is in progress.",
                subcode=1870145,
            )
        if state.member_count(audience["id"]) >= validation.REPLACE_MAX_USERS:
            raise GraphError(400, 2650, "(#2650) Audiences of 100 million or more cannot be replaced", subcode=1870144)
        if existing is not None:  # batch 1 again: Meta starts the replace over, dropping what the session sent
            state.restart_replace(audience["id"], sid)
        state.set_status(audience["id"], 300, "replace_in_progress")
    elif existing is None:
        raise GraphError(
            400,
            2650,
            "(#2650) Invalid upload batch for replace: the first batch (batch_seq 1) of "
            f"session {sid} has not been received.",
            subcode=1870147,
        )
    schema, data = _payload(state, audience, params)
    row_keys, invalid, samples, values = split_rows(schema, data, prepared)
    state.add_replace_rows(audience["id"], sid, row_keys)
    if audience["is_value_based"] and values is not None:
        state.set_values(audience["id"], row_keys, values, session_id=sid)
    after = state.record_batch(audience["id"], {**session, "last": False}, "replace", len(data), invalid)
    if session["last"]:
        state.finish_replace(audience["id"], sid)
    return _answer(audience["id"], after, samples)


def sessions(
    state: SandboxState, config: SandboxConfig, audience: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    data = []
    for s in state.sessions(audience["id"], str(params.get("session_id", "") or "")):
        if config.faults.open_sessions:  # as users report of Meta: done, yet still "uploading"
            s["finished"] = 0
        data.append(
            {
                "session_id": s["session_id"],
                "start_time": str(int(s["started"])),
                "end_time": str(int(s["started"])) if s["finished"] else "0",
                "num_received": str(s["num_received"]),
                "num_invalid_entries": str(s["num_invalid"]),
                "num_matched": str(s["num_matched"]),
                "progress": "100" if s["finished"] else "0",
                "stage": "finished" if s["finished"] else "uploading",
                "batch_seqs_received": s["batches"],
                "last_batch_seq": s["last_seq"],
            }
        )
    return {"data": data}
