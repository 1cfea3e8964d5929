"""Lookalike audiences Meta builds from one of ours (the seed): created once the seed is ready, found again by
origin and spec (never created twice), and read back from Meta on every run.

Meta's contract (Marketing API, Lookalike Audiences guide): `POST act_{id}/customaudiences` with
`subtype=LOOKALIKE`, `origin_audience_id` and `lookalike_spec` (`type: custom_ratio`, `country`, `ratio` 0.01-0.20
in steps of 0.01, optionally `starting_ratio` below it); the origin needs at least 100 people; a second
lookalike of one origin with the same country and size is refused with error 2654, subcode 1713007 ("Can't
Create a Duplicate Lookalike"); a new lookalike takes one to six hours to populate (operation_status 441
meanwhile). Read back, `lookalike_spec` names its origin as `origin: [{"id": ...}]`.

The seed is ready when the Meta audience it is bound to (`core.meta.binding`) still exists, Meta is no longer
populating it, and it holds at least 100 of the rows we sent (its confirmed record). Until then the lookalike
waits: nothing is created and the outcome says why (the asset tries again after the seed's next sync and every
six hours). Meta judges the seed by the people it matched, not the rows sent: when it refuses (error 2654, other
than a duplicate), the outcome carries Meta's words and the lookalike waits likewise.

What is on record per lookalike (`layout.lookalike`) is which Meta lookalike it is and which version of the
seed it was made from: the seed's confirmed record (its storage version and row count) when it was created.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from audience_assets.core import layout
from audience_assets.core.config import Audience
from audience_assets.core.config.audiences import Lookalike
from audience_assets.core.duck import connect, sql_path
from audience_assets.core.meta.binding import load_binding
from audience_assets.core.meta.errors import MetaApiError, MetaTransportError
from audience_assets.core.meta.health import Judgement, operation_health
from audience_assets.core.meta.manager import GONE, POPULATING, AudienceManager
from audience_assets.core.scratch import scratch
from audience_assets.core.store import Store

MIN_SEED_ROWS = 100  # Meta: "Origin audiences must have at least 100 members"
DUPLICATE = (2654, 1713007)
FIELDS = (
    "id,name,subtype,account_id,lookalike_spec,operation_status,delivery_status,approximate_count_lower_bound,"
    "approximate_count_upper_bound,time_updated"
)
# What happened to the lookalike in this run.
CREATED, FOUND, HELD, WAITING, RECREATED = "created", "found by its spec", "held", "waiting for its seed", "recreated"
REFUSED, NEW_SEED = "refused by Meta", "made for a new seed"
LOOKALIKE_ERRORS = 2654  # Meta's code for what it refuses about a lookalike (duplicate, country, seed size)


@dataclasses.dataclass(frozen=True)
class Seed:
    audience_id: str
    rows: int  # rows Meta confirmed holding, by our record
    version: str  # that record's storage version: the seed as the lookalike was made from it


@dataclasses.dataclass(frozen=True)
class LookalikeOutcome:
    key: str
    event: str
    note: str = ""
    seed: Seed | None = None
    lookalike_id: str = ""
    state: dict[str, Any] = dataclasses.field(default_factory=dict)  # Meta's read of the lookalike
    record: dict[str, Any] = dataclasses.field(default_factory=dict)  # what is on record about it

    @property
    def waiting(self) -> bool:
        """No lookalike yet: its seed is not ready, or Meta refused to make one from it."""
        return self.event in (WAITING, REFUSED)

    def metadata(self) -> dict[str, Any]:
        state, record = self.state, self.record
        figures: dict[str, Any] = {
            "event": self.event,
            "note": self.note or "-",
            "lookalike_id": self.lookalike_id or "none",
            "seed_audience_id": self.seed.audience_id if self.seed else "none",
            "seed_rows": self.seed.rows if self.seed else 0,
            "made_from_seed_version": str(record.get("seed_version") or "none"),
            "made_from_seed_rows": int(record.get("seed_rows") or 0),
            "recorded_at": str(record.get("recorded_at") or "none"),
        }
        for field in ("approximate_count_lower_bound", "approximate_count_upper_bound"):
            figures[field] = int(state.get(field, -1))
        for field in ("operation_status", "delivery_status"):
            status = state.get(field) or {}
            figures[f"{field}_code"] = int(status.get("code", -1))
            figures[field] = str(status.get("description", "-"))
        return figures


def lookalike_name(seed_name: str, lookalike: Lookalike) -> str:
    return f"{seed_name} · lookalike {lookalike.key}"


def spec_params(lookalike: Lookalike) -> dict[str, Any]:
    """The `lookalike_spec` Meta takes for it."""
    spec: dict[str, Any] = {"type": "custom_ratio", "country": lookalike.country, "ratio": lookalike.ratio}
    if lookalike.starting_ratio:
        spec["starting_ratio"] = lookalike.starting_ratio
    return spec


def is_it(found: dict[str, Any], seed_id: str, lookalike: Lookalike) -> bool:
    """Whether Meta's description of an audience is this lookalike of this seed (origin, country and size)."""
    spec = found.get("lookalike_spec") or {}
    origins = {str(o.get("id")) for o in spec.get("origin") or [] if isinstance(o, dict)}
    return (
        found.get("subtype") == "LOOKALIKE"
        and seed_id in origins
        and str(spec.get("country", "")).upper() == lookalike.country
        and round(float(spec.get("ratio") or 0) * 100) == round(lookalike.ratio * 100)
        and round(float(spec.get("starting_ratio") or 0) * 100) == round(lookalike.starting_ratio * 100)
    )


class LookalikeMismatch(RuntimeError):
    """The Meta audience on record as a lookalike is not that lookalike (another seed, spec or ad account): nothing
    is created on a guess; the message shows what Meta says it is."""


def ensure_lookalike(
    store: Store, manager: AudienceManager, audience: str, spec: Audience, lookalike: Lookalike
) -> LookalikeOutcome:
    """The lookalike `lookalike` of `audience` on Meta: the one on record when Meta still has it, else the one Meta
    holds for that seed and spec, else a new one; or, while the seed is not ready, the reason it waits."""
    seed = ready_seed(store, manager, audience)
    if isinstance(seed, str):
        return LookalikeOutcome(lookalike.key, WAITING, seed)
    record = _load(store, audience, lookalike)
    if record and record.get("ad_account_id") != manager.ad_account_id:
        record = None  # made in another ad account: not this account's lookalike
    event, note = CREATED, ""
    if record and record.get("seed_audience_id") == seed.audience_id:
        state = _read(manager, str(record["lookalike_id"]))
        if state is not None:
            _check_is_it(manager, state, audience, seed, lookalike)
            return LookalikeOutcome(lookalike.key, HELD, "", seed, str(state["id"]), state, record)
        event = RECREATED
        note = f"lookalike {record['lookalike_id']} of {audience} no longer exists on Meta (deleted in Ads Manager)"
    elif record:
        event = NEW_SEED
        note = (
            f"{audience}'s seed is now Meta audience {seed.audience_id} (it was {record['seed_audience_id']}, made "
            f"anew): lookalike {record['lookalike_id']} of the old seed stays on Meta until you delete it in Ads "
            "Manager (once no ad set targets it)"
        )
    found = find(manager, seed.audience_id, lookalike)
    try:
        lookalike_id = str(found["id"]) if found else create(manager, seed.audience_id, spec, lookalike)
    except MetaApiError as error:  # e.g. a seed of 150 rows of which Meta matched fewer than 100 people
        if error.code != LOOKALIKE_ERRORS:
            raise
        return LookalikeOutcome(lookalike.key, REFUSED, f"Meta refused to make it: {error}", seed)
    if found:
        how = f"{audience}'s lookalike {lookalike.key} found on Meta by its seed and spec ({lookalike_id})"
        event, note = (FOUND, how) if event == CREATED else (event, f"{note}; {how}")
    elif event != CREATED:
        note = f"{note}; made it ({lookalike_id})"
    record = _save(store, manager, audience, lookalike, lookalike_id, seed, event)
    state = _read(manager, lookalike_id) or {"id": lookalike_id}
    return LookalikeOutcome(lookalike.key, event, note, seed, lookalike_id, state, record)


def _check_is_it(
    manager: AudienceManager, state: dict[str, Any], audience: str, seed: Seed, lookalike: Lookalike
) -> None:
    account = str(state.get("account_id") or "")
    if is_it(state, seed.audience_id, lookalike) and account in ("", manager.ad_account_id.removeprefix("act_")):
        return
    raise LookalikeMismatch(
        f"Meta audience {state.get('id')}, on record as lookalike {lookalike.key} of {seed.audience_id}, is not: Meta "
        f"describes it as {state.get('subtype')} with lookalike_spec {json.dumps(state.get('lookalike_spec'))} in "
        f"ad account act_{account}. Nothing was created. Delete {layout.lookalike(audience, lookalike.key)} "
        "to have it found by its spec (or made) again"
    )


def ready_seed(store: Store, manager: AudienceManager, audience: str) -> Seed | str:
    """The seed as Meta holds it, or why a lookalike of it must wait."""
    binding = load_binding(store, audience)
    if binding is None or binding.ad_account_id not in ("", manager.ad_account_id):
        return f"{audience} has not been synced to {manager.ad_account_id} yet: the lookalike waits for its first sync"
    state = _read(manager, binding.meta_audience_id)
    if state is not None and str(state.get("account_id") or "") not in ("", manager.ad_account_id[4:]):
        return (
            f"the seed, Meta audience {binding.meta_audience_id} of {audience}, is in ad account "
            f"act_{state.get('account_id')}, not {manager.ad_account_id}: the lookalike waits for a sync to this "
            "account"
        )
    if state is None:
        return (
            f"the seed, Meta audience {binding.meta_audience_id} of {audience}, no longer exists: its next sync "
            "recreates it, then the lookalike is made"
        )
    if (state.get("operation_status") or {}).get("code") == POPULATING:
        return (
            f"Meta is still populating the seed ({binding.meta_audience_id}); the lookalike is tried again after the "
            "seed's next sync or within six hours"
        )
    record = layout.confirmed(audience, binding.meta_audience_id)
    version = store.version(record) or ""
    rows = _rows(store, record) if version else 0
    if rows < MIN_SEED_ROWS:
        return f"the seed holds {rows} rows on Meta; Meta builds a lookalike from {MIN_SEED_ROWS} people or more"
    return Seed(binding.meta_audience_id, rows, version)


def find(manager: AudienceManager, seed_id: str, lookalike: Lookalike) -> dict[str, Any] | None:
    """The ad account's lookalike of `seed_id` with this country and size (Meta keeps at most one), page by page."""
    after = None
    while True:
        params: dict[str, Any] = {"fields": "id,name,subtype,lookalike_spec", "limit": 200}
        if after:
            params["after"] = after
        page = manager.client.get(f"{manager.ad_account_id}/customaudiences", **params)
        for found in page.get("data", []):
            if is_it(found, seed_id, lookalike):
                return found
        paging = page.get("paging", {})
        after = paging.get("cursors", {}).get("after")
        if not paging.get("next") or not after:
            return None


def create(manager: AudienceManager, seed_id: str, spec: Audience, lookalike: Lookalike) -> str:
    """A new lookalike of `seed_id`. Creation is not idempotent: after a timeout, and when Meta answers that it
    already holds one (2654/1713007), the lookalike is looked up by its spec, never created blindly again."""
    body = {
        "name": lookalike_name(spec.meta_name, lookalike),
        "subtype": "LOOKALIKE",
        "origin_audience_id": seed_id,
        "lookalike_spec": json.dumps(spec_params(lookalike)),
    }
    try:
        created = manager.client.post(f"{manager.ad_account_id}/customaudiences", body, retry_on_timeout=False)
        return str(created["id"])
    except MetaTransportError:
        pass
    except MetaApiError as error:
        if (error.code, error.subcode) != DUPLICATE:
            raise
    found = find(manager, seed_id, lookalike)
    if found is None:
        raise RuntimeError(
            f"creating lookalike {lookalike.key} of {seed_id} timed out, or Meta says it exists, and the ad account's "
            "listing does not show it (yet): it may exist. Nothing more was created; the next run looks for it again"
        )
    return str(found["id"])


def _read(manager: AudienceManager, audience_id: str) -> dict[str, Any] | None:
    """Meta's description of an audience, or None when Meta says it does not exist (any other error is raised)."""
    try:
        return manager.client.get(audience_id, fields=FIELDS)
    except MetaApiError as error:
        if (error.code, error.subcode) == GONE:
            return None
        raise


def _rows(store: Store, record: str) -> int:
    with scratch("seed") as tmp, connect(tmp) as con, store.local_copy(record) as path:
        return con.execute(f"SELECT count(*) FROM read_parquet({sql_path(path)})").fetchall()[0][0]


def _load(store: Store, audience: str, lookalike: Lookalike) -> dict[str, Any] | None:
    raw = store.get_bytes(layout.lookalike(audience, lookalike.key))
    return json.loads(raw) if raw is not None else None


def _save(
    store: Store,
    manager: AudienceManager,
    audience: str,
    lookalike: Lookalike,
    lookalike_id: str,
    seed: Seed,
    event: str,
) -> dict[str, Any]:
    record = {
        "lookalike_id": lookalike_id,
        "ad_account_id": manager.ad_account_id,
        "seed_audience_id": seed.audience_id,
        "seed_version": seed.version,
        "seed_rows": seed.rows,
        "spec": spec_params(lookalike),
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "event": event,
    }
    store.put_bytes(layout.lookalike(audience, lookalike.key), json.dumps(record, indent=1).encode())
    return record


def judged(outcome: LookalikeOutcome) -> dict[str, Judgement]:
    """The lookalike's state as three judgements: whether it exists as on record (`lookalike`), and Meta's
    `operation_status` and `delivery_status` for it. A lookalike still being built (441) is a warning that says
    Meta takes one to six hours."""
    if outcome.waiting:
        waiting = Judgement(None, "", "warn", f"no lookalike yet: {outcome.note}")
        return {"lookalike": waiting, "operation_status": waiting, "delivery_status": waiting}
    changed = outcome.event not in (HELD, CREATED)
    made = Judgement(None, "", "warn" if changed else None, outcome.note if changed else "")
    operation = operation_health(outcome.state.get("operation_status"))
    if operation.code == POPULATING:
        operation = dataclasses.replace(
            operation,
            advice="still populating: Meta takes one to six hours to build a lookalike; ads can target it "
            "meanwhile and reach more people as it fills",
        )
    status = outcome.state.get("delivery_status") or {}
    code, said = status.get("code"), str(status.get("description") or "")
    delivery = Judgement(code, said, None, "")
    if code not in (None, 200):
        severity = "error" if code >= 400 else "warn"
        advice = f"Meta cannot deliver ads to the lookalike yet (delivery_status {code})"
        delivery = Judgement(code, said, severity, advice)
    return {"lookalike": made, "operation_status": operation, "delivery_status": delivery}
