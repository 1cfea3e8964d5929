"""The checks in a real run: a low match rate only warns (the run succeeds), a plaintext cell in the staged
payload stops the upload plan and nothing reaches Meta."""

from __future__ import annotations

import io

import dagster as dg
import duckdb
import pytest

from audience_assets.core import layout
from audience_assets.core.config import load_config
from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions
from audience_assets.defs.activation import checks
from audience_assets.defs.clean_room.checks import MATCH_RATE
from audience_assets.defs.resources import build_resources
from audience_assets.headless import run_pipeline
from audience_assets.standins.graph_sandbox import GraphSandbox


@pytest.mark.slow
def test_a_plaintext_cell_stops_the_upload_and_a_low_match_rate_only_warns(world: dict):
    data, config_dir = world["data"], world["config_dir"]
    (config_dir / "partners.yaml").write_text(
        (config_dir / "partners.yaml")
        .read_text()
        .replace("    match_keys: [EMAIL, PHONE]\n", "    match_keys: [EMAIL, PHONE]\n    min_match_rate: 0.99\n")
    )
    settings = Settings(data_dir=data, config_dir=config_dir, demo_data=False)
    with dg.instance_for_test() as instance:
        assert run_pipeline(settings, instance, out=io.StringIO())  # warnings do not fail runs
        evaluations = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("clean_room_matches"), MATCH_RATE)]
        )
        record = evaluations[dg.AssetCheckKey(dg.AssetKey("clean_room_matches"), MATCH_RATE)]
        assert record.event.dagster_event.event_specific_data.passed is False  # about 40% < 99%: a warning

        # Someone's plaintext email slips into the staged payload: the chunks must not become an upload plan.
        customers = data / layout.FIRST_PARTY_CUSTOMERS
        con = duckdb.connect()
        con.execute(f"CREATE TABLE c AS SELECT * FROM read_parquet('{customers}')")
        members = data / layout.audience_members("travel_enthusiasts")
        con.execute(
            "UPDATE c SET EMAIL = 'leaked.person@example.com' WHERE customer_id = (SELECT min(customer_id) FROM c "
            f"WHERE customer_id IN (SELECT customer_id FROM read_parquet('{members}')))"
        )
        con.execute(f"COPY c TO '{customers}' (FORMAT parquet)")
        con.close()
        config = load_config(config_dir)
        sandbox = GraphSandbox(data / "meta_sandbox" / "graph.sqlite")
        audience_id = sandbox.audience_id(config.audiences["travel_enthusiasts"].meta_name)
        before = sandbox.member_keys(audience_id)
        result = dg.materialize(
            list(build_definitions(settings).assets),
            selection=["audience_chunks", "meta_custom_audience"],
            partition_key="travel_enthusiasts",
            resources=build_resources(settings),
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert [e.check_name for e in failed] == [checks.HASHED_CELLS]
        assert not result.asset_materializations_for_node("meta_custom_audience")
        assert not (data / layout.upload_plan("travel_enthusiasts")).exists()
        assert sandbox.member_keys(audience_id) == before
        sandbox.close()
