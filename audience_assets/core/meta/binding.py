"""Which Meta audience one of ours is: bound by Meta's id, checked against Meta before every sync.

A name is how people find an audience in Ads Manager; the id is what Meta holds rows for. So the first sync
binds the audience to the id of the Meta audience it creates or finds (`meta/<audience>/binding.json`), and
everything recorded about it from then on (the rows Meta confirmed, the upload ledger, audit records) is kept
under that id. Before anything is sent, the bound audience is read back from Meta:

- it exists in the ad account and is a customer list: the binding holds. When `meta_name` (or the description)
  changed in audiences.yaml, the same audience is renamed on Meta (`POST /{id}`): its members are kept (a name
  another audience of the account carries is not taken: the sync warns instead);
- it no longer exists (deleted in Ads Manager, or by Meta after two unused years): a new audience is created,
  the old id's record is dropped and the whole wanted set is sent (`Binding.event` says so; the activation
  asset reports it as a warning and writes an audit record);
- `meta_audience_id` in audiences.yaml adopts an existing audience by its id: it must exist and be the ad
  account's customer list, or the run stops;
- whichever way it is found, the Meta audience must be of the kind audiences.yaml declares (value-based with
  `value:`, plain without): Meta fixes the kind at creation, so a mismatch stops the run with the fix;
- with no binding (the first sync, or a store that was lost) the audience is found by name or created. An ad
  account holding two audiences of that name stops the run, naming both ids (`manager.AmbiguousAudience`).

Anything Meta answers other than "does not exist" (no access, an outage) stops the sync: nothing is ever
recreated on a guess.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from audience_assets.core import layout
from audience_assets.core.config import Audience
from audience_assets.core.meta.errors import MetaPreflightError
from audience_assets.core.meta.manager import AudienceManager
from audience_assets.core.store import Store

# What happened to the binding in this sync; anything but HELD and CREATED is reported as a warning.
HELD, CREATED, FOUND, ADOPTED, RENAMED, NAME_TAKEN, RECREATED, MOVED = (
    "held",
    "created",
    "found by name",
    "adopted",
    "renamed",
    "name taken",
    "recreated",
    "moved to another ad account",
)


class BindingError(MetaPreflightError):
    """The bound (or configured) Meta audience cannot be used; the message names the ids and the fix."""


@dataclasses.dataclass(frozen=True)
class Binding:
    audience: str
    meta_audience_id: str
    ad_account_id: str
    meta_name: str
    bound_at: str
    event: str = HELD  # how this binding came about in the sync that wrote it
    created: bool = False  # the sync that wrote it created the Meta audience
    previous_id: str = ""  # the Meta audience bound before (recreated, moved)
    note: str = ""  # the sentence the activation asset reports

    def document(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_binding(store: Store, audience: str) -> Binding | None:
    raw = store.get_bytes(layout.binding(audience))
    if raw is None:
        return _migrated(store, audience)
    known = {f.name for f in dataclasses.fields(Binding)}
    return Binding(**{k: v for k, v in json.loads(raw).items() if k in known})


def _migrated(store: Store, audience: str) -> Binding | None:
    """A deployment from before bindings kept confirmed rows under the audience's name alone. Its latest upload
    audit names the Meta audience they were sent to: the rows move under that id and the binding is written.
    Without such a record the rows are not claimed for any audience (the next sync sends the whole set)."""
    legacy = store.get_bytes(layout.legacy_confirmed(audience))
    if legacy is None:
        return None
    audits = sorted(o.key for o in store.list(f"audit/{audience}/") if o.key.endswith(".json"))
    for key in reversed(audits):
        record = json.loads(store.get_bytes(key) or b"{}")
        if record.get("meta_audience_id") and record.get("upload_id"):
            audience_id = str(record["meta_audience_id"])
            store.put_bytes(layout.confirmed(audience, audience_id), legacy)
            store.delete(layout.legacy_confirmed(audience))
            binding = Binding(audience, audience_id, record.get("ad_account_id", ""), "", _now(), note="migrated")
            save_binding(store, binding)
            return binding
    store.delete(layout.legacy_confirmed(audience))
    return None


def save_binding(store: Store, binding: Binding) -> None:
    store.put_bytes(layout.binding(binding.audience), json.dumps(binding.document(), indent=1).encode())


def planned_audience_id(store: Store, audience: str, spec: Audience, ad_account_id: str) -> str:
    """The Meta audience a plan is made against (its record is the plan's basis): the configured
    `meta_audience_id`, else the bound one in this ad account, else "" (none yet: nothing on record)."""
    if spec.meta_audience_id:
        return spec.meta_audience_id
    bound = load_binding(store, audience)
    return bound.meta_audience_id if bound and bound.ad_account_id in ("", ad_account_id) else ""


def bind(store: Store, manager: AudienceManager, audience: str, spec: Audience) -> Binding:
    """The Meta audience this sync writes to, verified against Meta (see the module docstring); the binding is
    saved before anything is sent, so a crash mid-upload resumes into the same audience."""
    bound = load_binding(store, audience)
    account = manager.ad_account_id
    if bound is not None and bound.ad_account_id not in ("", account):
        moved, found = _unbound(manager, audience, spec)
        binding = dataclasses.replace(
            moved,
            event=MOVED,
            previous_id=bound.meta_audience_id,
            note=f"{audience} now writes to ad account {account}, not {bound.ad_account_id}: bound to Meta audience "
            f"{moved.meta_audience_id} there ({moved.event}) and sent the whole audience; the record of "
            f"{bound.meta_audience_id} stays with the other account",
        )
    elif spec.meta_audience_id:
        binding, found = _adopted(manager, audience, spec, bound)
    elif bound is not None:
        binding, found = _verified(store, manager, audience, spec, bound)
    else:
        binding, found = _unbound(manager, audience, spec)
    binding = _named(manager, spec, binding, found)
    save_binding(store, binding)
    return binding


Found = tuple[Binding, dict[str, Any]]  # the binding, and the audience as Meta described it


def _verified(store: Store, manager: AudienceManager, audience: str, spec: Audience, bound: Binding) -> Found:
    found = manager.lookup(bound.meta_audience_id)
    if found is not None:
        _check_ours(manager, found, f"the Meta audience {audience} is bound to", spec)
        return Binding(
            audience, bound.meta_audience_id, manager.ad_account_id, str(found.get("name", "")), _now()
        ), found
    store.delete(layout.confirmed(audience, bound.meta_audience_id))  # its rows went with it
    fresh, found = _unbound(manager, audience, spec)
    how = "created a new one" if fresh.event == CREATED else "bound the audience found by its name"
    return dataclasses.replace(
        fresh,
        event=RECREATED,
        previous_id=bound.meta_audience_id,
        note=f"Meta audience {bound.meta_audience_id} of {audience} no longer exists (deleted in Ads Manager or by "
        f"Meta); {how} ({fresh.meta_audience_id}) and sent the whole audience, not a difference",
    ), found


def _adopted(manager: AudienceManager, audience: str, spec: Audience, bound: Binding | None) -> Found:
    wanted = spec.meta_audience_id or ""
    found = manager.lookup(wanted)
    if found is None:
        raise BindingError(
            f"{audience}: meta_audience_id {wanted} does not exist in Meta (deleted, or a typo). Nothing was "
            "sent. Set the id of an existing customer-list audience, or remove meta_audience_id to let the "
            "pipeline create one"
        )
    _check_ours(manager, found, f"meta_audience_id {wanted} of {audience}", spec)
    if bound is not None and bound.meta_audience_id == wanted:
        return Binding(audience, wanted, manager.ad_account_id, str(found.get("name", "")), _now()), found
    adopted = Binding(
        audience,
        wanted,
        manager.ad_account_id,
        str(found.get("name", "")),
        _now(),
        event=ADOPTED,
        previous_id=bound.meta_audience_id if bound else "",
        note=f"{audience} adopted Meta audience {wanted} (meta_audience_id); nothing this deployment sent to it "
        "is on record, so the whole audience is sent",
    )
    return adopted, found


def _unbound(manager: AudienceManager, audience: str, spec: Audience) -> Found:
    named = manager.find(spec.meta_name)
    found = manager.lookup(str(named["id"])) if named is not None else None
    if found is not None:
        _check_ours(manager, found, f"the audience called {spec.meta_name!r}", spec)
        binding = Binding(
            audience,
            str(found["id"]),
            manager.ad_account_id,
            spec.meta_name,
            _now(),
            event=FOUND,
            note=f"{audience} bound to Meta audience {found['id']}, found by its name {spec.meta_name!r}; nothing "
            "this deployment sent to it is on record, so the whole audience is sent",
        )
        return binding, found
    created = manager.create(
        spec.meta_name,
        description=spec.description,
        customer_file_source=spec.customer_file_source,
        retention_days=spec.retention_days,
        value_based=spec.value is not None,
    )
    # read back: after a timeout, `create` may have found an audience of that name someone else made
    described = manager.lookup(created["id"]) or {**created, "description": spec.description}
    _check_ours(manager, described, f"the audience created as {spec.meta_name!r}", spec)
    bound = Binding(audience, created["id"], manager.ad_account_id, spec.meta_name, _now(), event=CREATED, created=True)
    return bound, described


def _named(manager: AudienceManager, spec: Audience, binding: Binding, found: dict[str, Any]) -> Binding:
    """Rename the bound audience on Meta when audiences.yaml names it differently, and bring its description in
    line. A name another audience of the account already carries is not taken (two audiences of one name could
    no longer be told apart by name): the audience keeps its name and the sync says so."""
    changes: dict[str, str] = {}
    current = str(found.get("name", spec.meta_name))
    note = binding.note
    if current != spec.meta_name:
        others = [str(a["id"]) for a in manager.named(spec.meta_name) if str(a["id"]) != binding.meta_audience_id]
        if others:
            refused = (
                f"Meta audience {binding.meta_audience_id} keeps its name {current!r}: meta_name {spec.meta_name!r} "
                f"is carried by {', '.join(others)} in the same ad account; rename or delete that one to free it"
            )
            note = f"{note}; {refused}" if note else refused
            event = binding.event if binding.event != HELD else NAME_TAKEN
            return dataclasses.replace(binding, meta_name=current, event=event, note=note)
        changes["name"] = spec.meta_name
    if spec.description and found.get("description", spec.description) != spec.description:
        changes["description"] = spec.description
    if changes:
        manager.update(binding.meta_audience_id, **changes)
    if "name" in changes:
        renamed = f"Meta audience {binding.meta_audience_id} renamed from {current!r} to {spec.meta_name!r} (meta_name "
        renamed += "in audiences.yaml); the same audience, its members kept"
        note = f"{note}; {renamed}" if note else renamed
        return dataclasses.replace(
            binding, meta_name=spec.meta_name, event=RENAMED if binding.event == HELD else binding.event, note=note
        )
    return dataclasses.replace(binding, meta_name=spec.meta_name)


def _check_ours(manager: AudienceManager, found: dict[str, Any], what: str, spec: Audience) -> None:
    account = str(found.get("account_id") or "")
    if account and account != manager.ad_account_id.removeprefix("act_"):
        raise BindingError(
            f"{what} ({found.get('id')}) belongs to ad account act_{account}, not {manager.ad_account_id}. "
            "Nothing was sent"
        )
    if found.get("subtype") not in (None, "CUSTOM"):
        raise BindingError(
            f"{what} ({found.get('id')}) is a {found.get('subtype')} audience; only customer-list (CUSTOM) "
            "audiences take uploads. Nothing was sent"
        )
    value_based, wanted = bool(found.get("is_value_based")), spec.value is not None  # not said: plain
    if value_based != wanted:
        kinds = {True: "value-based", False: "plain (not value-based)"}
        raise BindingError(
            f"{what} ({found.get('id')}) is {kinds[value_based]} on Meta, and audiences.yaml makes this audience "
            f"{kinds[wanted]}: Meta cannot switch an audience between the two. Nothing was sent. Give the audience "
            f"a new meta_name (a new {kinds[wanted].split(' ')[0]} Meta audience; delete the old one in Ads Manager "
            f"when done with it), or {'remove value:' if wanted else 'declare its value: again'}"
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
