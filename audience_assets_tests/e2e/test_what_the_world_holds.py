"""What the pipeline believes is what Meta holds: audiences are bound by Meta's id and verified before every
sync. Each test changes the world underneath a synced deployment the way it changes in production (an
audience deleted in Ads Manager, a renamed `meta_name`, an audience adopted by id, a second audience of the
same name) and runs the activation stage again; what Meta (the sandbox) holds is then compared with the
wanted set, never with the pipeline's own record.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from audience_assets.core import layout
from audience_assets.core.meta.binding import load_binding
from audience_assets.core.store import LocalStore
from audience_assets.headless import STAGES
from audience_assets_tests.world import check_results, crm_file, latest_metadata, meta, run, sandbox

pytestmark = pytest.mark.slow
ACTIVATION = (STAGES[2],)


def set_audience(config_dir, name: str, **changes) -> None:
    path = config_dir / "audiences.yaml"
    declared = yaml.safe_load(path.read_text())
    declared["audiences"][name].update(changes)
    path.write_text(yaml.safe_dump(declared, allow_unicode=True))


def test_a_deleted_audience_is_recreated_full_and_a_renamed_one_keeps_its_id_and_members(world: dict):
    data, config_dir, config = world["data"], world["config_dir"], world["config"]
    root, store = data.parent, LocalStore(data)
    travel, gamers = config.audiences["travel_enthusiasts"], config.audiences["young_gamers"]
    held_by = sandbox(root)
    try:
        deleted = held_by.audience_id(travel.meta_name)
        gamers_id = held_by.audience_id(gamers.meta_name)
        held_by.state.delete_audience(deleted)  # as Ads Manager's "Delete" does
    finally:
        held_by.close()
    assert load_binding(store, "travel_enthusiasts").meta_audience_id == deleted
    set_audience(config_dir, "young_gamers", meta_name="audience_assets · Gamers 18-34")

    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(data, config_dir, out, instance, stages=ACTIVATION), out.getvalue()
        binding = check_results(instance, "meta_custom_audience", "audience_binding")
    after = meta(root)
    assert after["travel_enthusiasts"] == world["held"]["travel_enthusiasts"], "recreated with the whole set"
    assert after["young_gamers"] == world["held"]["young_gamers"], "renamed, members kept"
    held_by = sandbox(root)
    try:
        recreated = held_by.audience_id(travel.meta_name)
        assert recreated not in (None, deleted)
        assert held_by.audience_id("audience_assets · Gamers 18-34") == gamers_id
        assert held_by.audience_id(gamers.meta_name) is None, "renamed in place, not created anew"
    finally:
        held_by.close()
    assert load_binding(store, "travel_enthusiasts").meta_audience_id == recreated
    assert not (data / layout.confirmed("travel_enthusiasts", deleted)).exists(), "the gone audience's record"
    assert (data / layout.confirmed("travel_enthusiasts", recreated)).is_file()
    records = [json.loads(p.read_text()) for p in sorted((data / "audit" / "travel_enthusiasts").glob("*.json"))]
    event = next(r for r in records if r.get("event") == "recreated")
    assert (event["previous_id"], event["meta_audience_id"]) == (deleted, recreated)
    upload = records[-1]
    assert upload["meta_audience_id"] == recreated
    assert upload["confirmed_rows_after"] == len(world["held"]["travel_enthusiasts"])
    for name, word in (("travel_enthusiasts", "no longer exists"), ("young_gamers", "renamed")):
        assert not binding[name].passed and binding[name].severity == dg.AssetCheckSeverity.WARN
        assert word in binding[name].description
    assert binding["new_parents"].passed


def test_an_adopted_audience_is_filled_and_two_audiences_of_one_name_stop_the_run(world: dict):
    data, config_dir, config = world["data"], world["config_dir"], world["config"]
    root, store = data.parent, LocalStore(data)
    parents = config.audiences["new_parents"]
    held_by = sandbox(root)
    try:
        account = held_by.state.audience(held_by.audience_id(parents.meta_name))["account"]
        made_by_hand = held_by.state.create_audience(  # value-based, as new_parents is
            account, "Parents (made in Ads Manager)", "CUSTOM", "", "USER_PROVIDED_ONLY", 180, True
        )
        old = held_by.audience_id(parents.meta_name)
        travel = config.audiences["travel_enthusiasts"]
        twin = held_by.state.create_audience(account, travel.meta_name, "CUSTOM", "", "USER_PROVIDED_ONLY", 0, False)
        first = held_by.audience_id(travel.meta_name)
    finally:
        held_by.close()
    set_audience(config_dir, "new_parents", meta_audience_id=int(made_by_hand))  # YAML without quotes: a number
    store.delete(layout.binding("travel_enthusiasts"))  # a store that lost its binding: only the name is left

    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert not run(data, config_dir, out, instance, stages=ACTIVATION)
        binding = check_results(instance, "meta_custom_audience", "audience_binding")
    text = out.getvalue()
    assert f"holds 2 audiences called {travel.meta_name!r} ({first}, {twin})" in text, text
    held_by = sandbox(root)
    try:
        assert held_by.member_keys(made_by_hand) == world["held"]["new_parents"], "adopted and filled"
        assert held_by.member_keys(old) == world["held"]["new_parents"], "the audience it left is not touched"
        assert held_by.state.audience(made_by_hand)["name"] == "Parents (made in Ads Manager)", "its name is taken"
        assert held_by.member_keys(twin) == set() and held_by.member_keys(first) == world["held"]["travel_enthusiasts"]
    finally:
        held_by.close()
    assert load_binding(store, "new_parents").meta_audience_id == made_by_hand
    assert load_binding(store, "travel_enthusiasts") is None, "nothing is bound on a guess"
    adopted = binding["new_parents"]
    assert not adopted.passed and f"adopted Meta audience {made_by_hand}" in adopted.description
    assert f"meta_name {parents.meta_name!r} is carried by {old}" in adopted.description


def test_an_older_export_never_becomes_current_again_whatever_happens_to_its_file(world: dict):
    """A newer CRM export without 5 % of the customers is delivered and synced. Then the older export is
    touched the ways housekeeping and transfers touch files: `chmod`, a modification time in the future (a
    sender's clock, `rsync -t`), moved into `processed/`, copied back under another name. None of it brings
    the people who left back into an audience."""
    data, config_dir = world["data"], world["config_dir"]
    older = crm_file(data)
    header, *rows = older.read_text(encoding="utf-8").splitlines(keepends=True)
    newer = older.with_name("crm_next.csv")
    newer.write_text(header + "".join(row for i, row in enumerate(rows) if i % 20), encoding="utf-8")
    out = io.StringIO()
    assert run(data, config_dir, out, tags={"audience_assets/approve_removals": "travel_enthusiasts,new_parents"})
    synced = meta(data.parent)
    assert synced != world["held"], "the newer export changed the audiences"

    older.chmod(0o600)
    future = time.time() + 30 * 86_400
    os.utime(older, (future, future))
    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(data, config_dir, out, instance), out.getvalue()
        figures = latest_metadata(instance, "first_party_customers")
    assert meta(data.parent) == synced
    assert "crm_next.csv" in str(figures["files"]) and older.name not in str(figures["files"])
    assert f"not read: {older.relative_to(data).as_posix()}" in out.getvalue()
    assert "superseded by landing/first_party/crm_next.csv" in out.getvalue()

    processed = older.parent / "processed"
    processed.mkdir()
    moved = Path(shutil.move(older, processed / older.name))
    shutil.copy2(moved, older.parent / "crm_resent.csv")  # the same bytes delivered again, under another name
    out = io.StringIO()
    assert run(data, config_dir, out), out.getvalue()
    assert meta(data.parent) == synced
    text = out.getvalue()
    assert f"not read: {moved.relative_to(data).as_posix()}" in text and "a sub-folder of landing/first_party/" in text
    assert "not read: landing/first_party/crm_resent.csv" in text


def test_a_linked_landing_folder_works_and_a_second_writer_of_an_audience_waits_then_fails_clearly(world: dict):
    data, config_dir = world["data"], world["config_dir"]
    mounted = data.parent / "sftp_drop"
    shutil.move(data / "landing", mounted)
    os.symlink(mounted, data / "landing")  # the landing zone mounted from elsewhere
    out = io.StringIO()
    with LocalStore(data).lock("audience-travel_enthusiasts", owner="another-run"):
        assert not run(data, config_dir, out, settings={"lock_wait_seconds": 0.5})
    text = out.getvalue()
    assert "audience-travel_enthusiasts is being written by run another-run" in text, text
    assert "This step wrote nothing" in text
    assert (
        text.count("FAILED") == 1
        and "ok     audience_members, audience_holdout, audience_chunks, meta_custom_audience [young_gamers]" in text
    )
    assert meta(data.parent) == world["held"]
    assert (mounted / "first_party").is_dir() and os.path.islink(data / "landing")
