"""Safe syncs end to end: each broken delivery a user met ends with Meta's audiences unchanged (or changed only
after an explicit approval), a message naming the file and the rule, and rows read = accepted + quarantined;
healthy day-to-day churn is never held.

Each test copies the `world` (a small demo landing zone run once into the built-in Meta sandbox), breaks one
delivery the way it broke in the field, and runs again.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from audience_assets.core.settings import Settings
from audience_assets.headless import STAGES, plan_pipeline
from audience_assets_tests.world import crm_file, latest_metadata, meta, newer, partner_file, run

pytestmark = pytest.mark.slow
PARTNER_STAGE = (STAGES[1],)


def test_a_truncated_crm_export_is_held_then_removals_wait_for_their_own_approval(world: dict):
    data, config_dir = world["data"], world["config_dir"]
    crm = crm_file(data)
    lines = crm.read_text(encoding="utf-8").splitlines(keepends=True)
    crm.write_text("".join(lines[:3001]), encoding="utf-8")  # a failed export: header + 3,000 rows

    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert not run(data, config_dir, out, instance)
        figures = latest_metadata(instance, "first_party_customers")
    text = out.getvalue()
    assert (
        f"first_party (landing/first_party/{crm.name}): rows accepted fell from" in text and "max_shrink is 20%" in text
    )
    assert figures["published"] is False and figures["guard/blocked"] is True
    assert figures["rows_read"] == 3_000 == figures["rows_accepted"] + figures["rows_quarantined"]
    assert meta(data.parent) == world["held"]

    # The advertiser confirms the export is right: the delivery is accepted, but removals wait for their
    # own approval, audience by audience (travel is mirror, new parents replace; young gamers only adds).
    out = io.StringIO()
    assert not run(data, config_dir, out, tags={"audience_assets/accept_delivery": "first_party"})
    text = out.getvalue()
    for audience in ("travel_enthusiasts", "new_parents"):
        assert f"{audience}: the sync would remove" in text and "max_removal is 10%" in text
    assert meta(data.parent) == world["held"]

    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert not plan_pipeline(
            Settings(data_dir=data, config_dir=config_dir, demo_data=False), instance, ["travel_enthusiasts"], out
        )
    assert "travel_enthusiasts (mirror" in out.getvalue() and "BLOCKED by the removal guard" in out.getvalue()
    assert meta(data.parent) == world["held"], "plan sends nothing"

    out = io.StringIO()
    run(data, config_dir, out, tags={"audience_assets/approve_removals": "travel_enthusiasts"})
    after = meta(data.parent)
    assert after["travel_enthusiasts"] < world["held"]["travel_enthusiasts"]
    assert after["new_parents"] == world["held"]["new_parents"], "approval is per audience"
    audits = sorted((data / "audit" / "travel_enthusiasts").glob("*.json"))
    approvals = json.loads(audits[-1].read_text())["approvals"]
    assert approvals["removals"]["rows"] > 0.1 * approvals["removals"]["held"]
    assert approvals["run_tags"] == {
        "audience_assets/approve_removals": "travel_enthusiasts",
        "audience_assets/trigger": "headless",
    }


def test_a_latin1_crm_export_fails_as_a_file_naming_the_byte_and_line(world: dict):
    data, config_dir = world["data"], world["config_dir"]
    crm = crm_file(data)
    text = crm.read_text(encoding="utf-8")
    latin1 = text.encode("latin-1", errors="replace")  # as a spreadsheet's "Save as" writes it
    crm.write_bytes(latin1)
    first = next(i for i, byte in enumerate(latin1) if byte > 127)
    line = latin1[:first].count(b"\n") + 1

    out = io.StringIO()
    assert not run(data, config_dir, out)
    assert f"{crm.name} is not valid UTF-8: byte {first:,} (line {line:,})" in out.getvalue()
    assert meta(data.parent) == world["held"]


def test_a_partner_snapshot_with_a_header_only_or_no_valid_row_is_held(world: dict):
    data, config_dir = world["data"], world["config_dir"]
    acme = partner_file(data)
    header, *rows = acme.read_text(encoding="utf-8").splitlines(keepends=True)
    held = newer(acme, header.encode())
    out = io.StringIO()
    assert not run(data, config_dir, out, stages=PARTNER_STAGE)
    assert f"acme_data ({held.relative_to(data).as_posix()}): empty delivery (0 rows read, none accepted)" in (
        out.getvalue()
    )

    # Every row unusable: neither email nor phone parses (the other columns stay as they were).
    broken = [";".join(["not-an-email", "n/a", *r.split(";")[2:]]) for r in rows[:500]]
    held.write_text(header + "".join(broken), encoding="utf-8")
    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert not run(data, config_dir, out, instance)
        figures = latest_metadata(instance, "partner_data", "acme_data")
    assert "empty delivery (500 rows read, none accepted)" in out.getvalue()
    assert "500 of 500 rows quarantined (100.0%; max_quarantine is 5%)" in out.getvalue()
    assert figures["rows_read"] == 500 == figures["rows_accepted"] + figures["rows_quarantined"]
    assert meta(data.parent) == world["held"]


def test_oversized_lines_fail_their_file_fast_and_zero_byte_snapshots_are_not_skipped(world: dict):
    data, config_dir = world["data"], world["config_dir"]
    acme = partner_file(data)
    header = acme.read_text(encoding="utf-8").splitlines(keepends=True)[0]

    one_line = newer(acme, b"x;" * 25_000_000)  # 50 MB, no line break at all
    started = time.monotonic()
    out = io.StringIO()
    assert not run(data, config_dir, out, stages=PARTNER_STAGE)
    assert time.monotonic() - started < 60
    assert one_line.name in out.getvalue() and "longer than 1,048,576 bytes" in out.getvalue()

    row = "a@example.com;5550100;Ann;Lee;94103;travel;25-34\n"
    one_line.write_bytes((header + row * 10 + "b" * 31_000_000 + ";;;;;;\n" + row * 10).encode())
    out = io.StringIO()
    assert not run(data, config_dir, out, stages=PARTNER_STAGE)
    assert one_line.name in out.getvalue() and "(line 12" in out.getvalue()

    one_line.write_bytes(b"")
    out = io.StringIO()
    assert not run(data, config_dir, out, stages=PARTNER_STAGE)
    assert f"{one_line.name} is empty (0 bytes)" in out.getvalue()
    assert meta(data.parent) == world["held"]


def test_undeclared_folders_and_partial_uploads_are_reported_not_ignored(world: dict):
    data, config_dir = world["data"], world["config_dir"]
    (data / "landing" / "partners" / "gamma").mkdir()
    (data / "landing" / "partners" / "gamma" / "segments.csv").write_text("email\na@example.com\n")
    (data / "landing" / "partners" / "acme_data" / "next.csv.part").write_text("email\n")
    (data / "landing" / "crm.csv").write_text("email\n")
    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(data, config_dir, out, instance, stages=(STAGES[0],))
        report = latest_metadata(instance, "landing_zone_report")
    text = out.getvalue()
    assert "not read: landing/partners/gamma/segments.csv (20 bytes): partner folder 'gamma' is not declared" in text
    assert "not read: landing/partners/acme_data/next.csv.part (6 bytes): temporary, hidden or partial" in text
    assert "not read: landing/crm.csv (6 bytes): outside every source's prefix" in text
    assert report["ignored_objects"] == 3 and "gamma" in report["report"]


def test_healthy_churn_flows_on_and_control_characters_never_reach_meta(world: dict):
    """A CRM export a few percent different (3 % gone, 2 % changed) and a partner delivery 2 % smaller pass
    every guard; emails with NUL or other control characters are invalid, with a reason."""
    data, config_dir, config = world["data"], world["config_dir"], world["config"]
    crm = crm_file(data)
    with crm.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    kept = rows[: int(len(rows) * 0.97)]
    for row in kept[:200]:
        row["email"] = row["email"].replace("@", "\x00@", 1) if row["email"] else row["email"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    crm.write_text(buffer.getvalue(), encoding="utf-8")
    acme = partner_file(data)
    acme_lines = acme.read_text(encoding="utf-8").splitlines(keepends=True)
    acme.write_text("".join(acme_lines[: int(len(acme_lines) * 0.98)]), encoding="utf-8")

    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(data, config_dir, out, instance), out.getvalue()
        figures = latest_metadata(instance, "first_party_customers")
    planted = sum(1 for row in kept[:200] if row["email"])
    assert f"{planted} control character" in figures["invalid_values"]["EMAIL"]
    after = meta(data.parent)
    assert after != world["held"] and all(after[a] for a in config.audiences)


def test_a_manual_approval_audience_waits_for_a_person(world: dict, tmp_path: Path):
    data, config_dir = world["data"], world["config_dir"]
    path = config_dir / "audiences.yaml"
    audiences = yaml.safe_load(path.read_text())
    audiences["audiences"]["young_gamers"]["approval"] = "manual"
    audiences["audiences"]["young_gamers"]["meta_name"] = "audience_assets · Young gamers (reviewed)"
    path.write_text(yaml.safe_dump(audiences, allow_unicode=True))
    shutil.rmtree(data / "meta" / "young_gamers")  # a new Meta audience: everything is to be added

    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(data, config_dir, out, instance)
        observations = instance.fetch_observations(dg.AssetKey("meta_custom_audience"), limit=5).records
    assert meta(data.parent)["young_gamers"] is None, "nothing was created or sent"
    assert [o.asset_observation.partition for o in observations] == ["young_gamers"]

    out = io.StringIO()
    assert run(data, config_dir, out, tags={"audience_assets/approve_upload": "young_gamers"})
    assert meta(data.parent)["young_gamers"] == world["held"]["young_gamers"]


def test_opt_outs_only_grow_whatever_happens_to_their_files(world: dict):
    """An empty opt-out file, one whose every row is unusable, and one deleted from the landing zone: the run
    goes on, new opt-outs would still be published, and no earlier opt-out is forgotten."""
    data, config_dir = world["data"], world["config_dir"]
    before = pq.read_table(data / "staging" / "suppression" / "suppressed.parquet").num_rows
    suppression = data / "landing" / "suppression"
    (suppression / "optouts_empty.csv").write_bytes(b"")
    (suppression / "optouts_broken.csv").write_text("email\nnot-an-email\nalso not\n", encoding="utf-8")
    for path in suppression.glob("optouts_2*.csv"):
        path.unlink()  # the original opt-out files are gone (deleted by hand, or lost)
    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(data, config_dir, out, instance), out.getvalue()
        figures = latest_metadata(instance, "suppression_list")
    assert pq.read_table(data / "staging" / "suppression" / "suppressed.parquet").num_rows == before
    assert figures["published"] is True and figures["rows_quarantined"] == 2
    assert meta(data.parent) == world["held"]


def test_a_replace_into_an_audience_this_deployment_has_no_record_of_waits_for_approval(world: dict):
    """Travel as a replace audience whose record of what was sent is lost: Meta holds ~1,700 people this
    deployment cannot account for, so the replace sends nothing until removals are approved."""
    data, config_dir = world["data"], world["config_dir"]
    path = config_dir / "audiences.yaml"
    audiences = yaml.safe_load(path.read_text())
    audiences["audiences"]["travel_enthusiasts"]["mode"] = "replace"
    path.write_text(yaml.safe_dump(audiences, allow_unicode=True))
    shutil.rmtree(data / "meta" / "travel_enthusiasts")
    out = io.StringIO()
    assert not run(data, config_dir, out)
    assert "but nothing this deployment sent to it is on record" in out.getvalue()
    assert meta(data.parent) == world["held"]
    out = io.StringIO()
    assert run(data, config_dir, out, tags={"audience_assets/approve_removals": "travel_enthusiasts"}), out.getvalue()
    assert meta(data.parent) == world["held"]  # the same people: nobody was lost on the way
