"""Binding an audience to its Meta audience by id (`core.meta.binding`), against the Graph API sandbox in
process: what is done when the bound audience is gone, renamed, adopted, in another account, or unreadable,
and how a deployment from before bindings is migrated. Nothing is recreated on anything but Meta's own
"does not exist"."""

from __future__ import annotations

import json

import pytest

from audience_assets.core import layout
from audience_assets.core.config import Audience
from audience_assets.core.meta.binding import (
    ADOPTED,
    CREATED,
    HELD,
    MOVED,
    RECREATED,
    RENAMED,
    BindingError,
    bind,
    load_binding,
)
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.errors import MetaApiError
from audience_assets.core.meta.manager import AudienceManager
from audience_assets.core.store import LocalStore
from audience_assets.standins.graph_sandbox import GraphSandbox, SandboxConfig

TOKEN, ACCOUNT, OTHER = "tok-binding", "act_1000000001", "act_2000000002"
SPEC = Audience(meta_name="Travel", description="travellers", select={"partner": {}})


@pytest.fixture
def sandbox():
    accounts = {ACCOUNT: {"name": "a"}, OTHER: {"name": "b"}}
    sandbox = GraphSandbox(config=SandboxConfig(tokens={TOKEN: ["*"], "narrow": [OTHER]}, ad_accounts=accounts))
    yield sandbox
    sandbox.close()


def manager_for(sandbox: GraphSandbox, account: str = ACCOUNT, token: str = TOKEN) -> AudienceManager:
    client = GraphClient(access_token=token, transport=sandbox.transport(), base_url="http://127.0.0.1")
    return AudienceManager(client, account)


def test_a_held_binding_survives_and_a_renamed_meta_name_renames_the_same_audience(sandbox, tmp_path):
    store = LocalStore(tmp_path)
    first = bind(store, manager_for(sandbox), "travel", SPEC)
    assert (first.event, first.created) == (CREATED, True)
    assert bind(store, manager_for(sandbox), "travel", SPEC).event == HELD
    renamed = bind(store, manager_for(sandbox), "travel", SPEC.model_copy(update={"meta_name": "Travel 2027"}))
    assert (renamed.event, renamed.meta_audience_id) == (RENAMED, first.meta_audience_id)
    assert sandbox.state.audience(first.meta_audience_id)["name"] == "Travel 2027"
    assert sandbox.audience_id("Travel") is None


def test_only_metas_does_not_exist_recreates_an_audience(sandbox, tmp_path):
    store = LocalStore(tmp_path)
    first = bind(store, manager_for(sandbox), "travel", SPEC)
    store.put_bytes(layout.confirmed("travel", first.meta_audience_id), b"rows Meta confirmed")
    # a token that cannot see the audience: Meta answers 200, never "gone"; nothing is recreated on a guess
    with pytest.raises(MetaApiError):
        bind(store, manager_for(sandbox, token="narrow"), "travel", SPEC)
    assert load_binding(store, "travel").meta_audience_id == first.meta_audience_id
    assert store.get_bytes(layout.confirmed("travel", first.meta_audience_id)) == b"rows Meta confirmed"

    sandbox.state.delete_audience(first.meta_audience_id)
    again = bind(store, manager_for(sandbox), "travel", SPEC)
    assert (again.event, again.previous_id, again.created) == (RECREATED, first.meta_audience_id, True)
    assert again.meta_audience_id == sandbox.audience_id("Travel") != first.meta_audience_id
    assert store.get_bytes(layout.confirmed("travel", first.meta_audience_id)) is None
    assert "no longer exists" in again.note


def test_adopting_by_id_needs_an_existing_customer_list_of_the_account(sandbox, tmp_path):
    store = LocalStore(tmp_path)
    made = sandbox.state.create_audience(ACCOUNT, "By hand", "CUSTOM", "", "USER_PROVIDED_ONLY", 0, False)
    elsewhere = sandbox.state.create_audience(OTHER, "Theirs", "CUSTOM", "", "USER_PROVIDED_ONLY", 0, False)
    adopted = bind(store, manager_for(sandbox), "travel", SPEC.model_copy(update={"meta_audience_id": made}))
    assert (adopted.event, adopted.meta_audience_id) == (ADOPTED, made)
    assert sandbox.state.audience(made)["name"] == "Travel", "named as audiences.yaml says (the name was free)"
    with pytest.raises(BindingError, match="does not exist in Meta"):
        bind(store, manager_for(sandbox), "travel", SPEC.model_copy(update={"meta_audience_id": "999"}))
    with pytest.raises(BindingError, match=f"belongs to ad account {OTHER}, not {ACCOUNT}"):
        bind(store, manager_for(sandbox), "travel", SPEC.model_copy(update={"meta_audience_id": elsewhere}))
    assert load_binding(store, "travel").meta_audience_id == made, "a refused adoption changes nothing"


def test_a_value_based_audience_is_created_so_and_never_bound_to_one_of_the_other_kind(sandbox, tmp_path):
    """Meta fixes an audience's kind at creation: a value-based audience is created with is_value_based, and one
    found by name, adopted or held that is of the other kind stops the sync with the fix."""
    valued = type(SPEC).model_validate({**SPEC.model_dump(), "value": {"column": "ltv_usd"}})
    created = bind(LocalStore(tmp_path / "a"), manager_for(sandbox), "travel", valued)
    assert sandbox.state.audience(created.meta_audience_id)["is_value_based"] == 1
    with pytest.raises(BindingError, match="is value-based on Meta, and audiences.yaml makes this audience plain"):
        bind(LocalStore(tmp_path / "b"), manager_for(sandbox), "travel", SPEC)  # found by its name
    plain = sandbox.state.create_audience(ACCOUNT, "Plain", "CUSTOM", "", "USER_PROVIDED_ONLY", 0, False)
    adopting = valued.model_copy(update={"meta_audience_id": plain})
    with pytest.raises(BindingError, match="is plain .* on Meta, and audiences.yaml makes this audience value-based"):
        bind(LocalStore(tmp_path / "c"), manager_for(sandbox), "travel", adopting)
    store = LocalStore(tmp_path / "a")
    with pytest.raises(BindingError, match="Give the audience a new meta_name"):  # the held binding, value removed
        bind(store, manager_for(sandbox), "travel", SPEC)
    assert load_binding(store, "travel").meta_audience_id == created.meta_audience_id


def test_an_audience_moved_to_another_ad_account_is_bound_there(sandbox, tmp_path):
    store = LocalStore(tmp_path)
    first = bind(store, manager_for(sandbox), "travel", SPEC)
    moved = bind(store, manager_for(sandbox, OTHER), "travel", SPEC)
    assert (moved.event, moved.previous_id, moved.ad_account_id) == (MOVED, first.meta_audience_id, OTHER)
    assert sandbox.state.audience(moved.meta_audience_id)["account"] == OTHER


def test_a_deployment_from_before_bindings_moves_its_record_under_the_audited_id(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes(layout.legacy_confirmed("travel"), b"rows")
    store.put_bytes(
        "audit/travel/20261201T000000000000Z-u1.json",
        json.dumps({"meta_audience_id": "42", "upload_id": "u1"}).encode(),
    )
    binding = load_binding(store, "travel")
    assert binding is not None and binding.meta_audience_id == "42"
    assert store.get_bytes(layout.confirmed("travel", "42")) == b"rows"
    assert store.get_bytes(layout.legacy_confirmed("travel")) is None

    orphan = LocalStore(tmp_path / "orphan")  # rows with no audit naming their audience are claimed for none
    orphan.put_bytes(layout.legacy_confirmed("travel"), b"rows")
    assert load_binding(orphan, "travel") is None and orphan.get_bytes(layout.legacy_confirmed("travel")) is None
