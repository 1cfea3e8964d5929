"""Meta currency end to end: an expired API version uploads nothing (the check names the date and the setting),
Limited Data Use reaches the payload per audience or per row, and each audience's health as Meta reports it,
injected through the sandbox, surfaces as its check."""

from __future__ import annotations

import csv
import io
import json

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from audience_assets.core.audience.plan import load_plan, read_chunk_json
from audience_assets.core.store import LocalStore
from audience_assets_tests.world import check_results, crm_file, meta, run, sandbox

pytestmark = pytest.mark.slow


def test_an_expired_version_blocks_the_upload_before_anything_is_sent(world: dict):
    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert not run(world["data"], world["config_dir"], out, instance, settings={"meta_api_version": "v24.0"})
        version = check_results(instance, "audience_chunks", "api_version")
    assert set(version) == set(world["config"].audiences)
    for evaluation in version.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert "v24.0 expired on 2026-11-10" in evaluation.description and "META_API_VERSION" in evaluation.description
    assert meta(world["data"].parent) == world["held"]


def test_metas_health_reports_become_checks_with_metas_words(world: dict):
    """Travel: too small to deliver and a low match rate; new parents: populating for three reads (the preflight
    sees one, the rest are polled until settled); young gamers: the creating account inactive."""
    config, root = world["config"], world["data"].parent
    held_by = sandbox(root)
    try:
        ids = {a: held_by.audience_id(spec.meta_name) for a, spec in config.audiences.items()}
        held_by.set_health(
            ids["travel_enthusiasts"],
            delivery=(300, "This audience is too small to deliver ads."),
            operation=(411, "Low match rate"),
        )
        held_by.set_health(ids["new_parents"], populating_reads=3)
        held_by.set_health(ids["young_gamers"], operation=(470, "The ad account that created this is inactive."))
    finally:
        held_by.close()
    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(world["data"], world["config_dir"], out, instance), out.getvalue()  # warnings do not fail runs
        delivery = check_results(instance, "meta_custom_audience", "delivery_status")
        operation = check_results(instance, "meta_custom_audience", "operation_status")
        polls = {
            r.asset_materialization.partition: r.asset_materialization.metadata["populating_polls"].value
            for r in instance.fetch_materializations(dg.AssetKey("meta_custom_audience"), limit=10).records
        }
    travel = delivery["travel_enthusiasts"]
    assert not travel.passed and travel.severity == dg.AssetCheckSeverity.WARN
    assert "too small or inactive to deliver: Meta holds" in travel.description
    assert '(Meta: "This audience is too small to deliver ads.")' in travel.description
    assert "low match rate" in operation["travel_enthusiasts"].description
    assert operation["new_parents"].passed and polls["new_parents"] >= 1
    gamers = operation["young_gamers"]
    assert not gamers.passed and gamers.severity == dg.AssetCheckSeverity.ERROR and "inactive" in gamers.description
    assert delivery["new_parents"].passed and delivery["young_gamers"].passed


def test_limited_data_use_per_audience_and_per_row_reaches_meta_as_its_schema_allows(world: dict):
    """Travel: LDU for everyone (California named); new parents: LDU where the CRM's state says California
    (Meta geolocates); young gamers: no data_processing, so exactly the payload of before. Enabling LDU on
    audiences Meta already holds re-sends their rows as adds, never as removals."""
    data, config_dir = world["data"], world["config_dir"]
    path = config_dir / "audiences.yaml"
    audiences = yaml.safe_load(path.read_text())
    audiences["audiences"]["travel_enthusiasts"]["data_processing"] = {"options": ["LDU"], "country": 1, "state": 1000}
    audiences["audiences"]["new_parents"]["data_processing"] = {"column": "state", "values": ["CA", "California"]}
    path.write_text(yaml.safe_dump(audiences, allow_unicode=True))
    young_before = sorted((data / "audit" / "young_gamers").glob("*.json"))
    # ... and one travel member opts out: the removal leaves with the LDU fields of what Meta holds ([], 0, 0)
    member = pq.read_table(data / "audiences" / "travel_enthusiasts" / "members.parquet").column("customer_id")
    crm = {row["customer_id"]: row["email"] for row in csv.DictReader(crm_file(data).open(encoding="utf-8"))}
    leaving = next(crm[c] for c in member.to_pylist() if crm.get(c))
    (data / "landing" / "suppression" / "optouts_ldu.csv").write_text(f"email\n{leaving}\n", encoding="utf-8")

    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(data, config_dir, out, instance), out.getvalue()  # the sandbox validated every LDU cell
        chunks = {
            r.asset_materialization.partition: {k: v.value for k, v in r.asset_materialization.metadata.items()}
            for r in instance.fetch_materializations(dg.AssetKey("audience_chunks"), limit=10).records
        }
    after = meta(data.parent)
    assert after["new_parents"] == world["held"]["new_parents"], "the same people, now with their LDU status"
    assert len(world["held"]["travel_enthusiasts"] - after["travel_enthusiasts"]) == 1  # only the opt-out left
    travel = chunks["travel_enthusiasts"]
    assert travel["ldu_rows"] == travel["desired_rows"] == travel["add_rows"] and travel["remove_rows"] == 1
    assert 0 < chunks["new_parents"]["ldu_rows"] < chunks["new_parents"]["desired_rows"]
    assert chunks["young_gamers"]["ldu_rows"] == 0 and "DATA_PROCESSING" not in chunks["young_gamers"]["schema"]

    audits = {
        a: json.loads(sorted((data / "audit" / a).glob("*.json"))[-1].read_text())
        for a in ("travel_enthusiasts", "new_parents")
    }
    assert audits["travel_enthusiasts"]["ldu_rows"] == travel["ldu_rows"]
    assert sorted((data / "audit" / "young_gamers").glob("*.json"))[: len(young_before)] == young_before

    plan = load_plan(LocalStore(data), "new_parents")
    chunk = next(c for op in plan.operations for c in op.chunks)
    with duckdb.connect() as con:
        rows = json.loads(read_chunk_json(con, data / chunk.key, plan.schema))
    fields = plan.schema[-4:]  # new_parents is value-based: its value follows the LDU fields
    assert fields == (
        "DATA_PROCESSING_OPTIONS",
        "DATA_PROCESSING_OPTIONS_COUNTRY",
        "DATA_PROCESSING_OPTIONS_STATE",
        "LOOKALIKE_VALUE",
    )
    assert {tuple(json.dumps(v) for v in row[-4:-1]) for row in rows} == {('["LDU"]', "0", "0"), ("[]", "0", "0")}
    assert all(isinstance(row[-1], float) and row[-1] >= 0 for row in rows)
