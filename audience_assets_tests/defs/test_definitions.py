"""The code location: it loads in every environment, shows the whole lineage, and its three entry points agree."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml

from audience_assets.core.config import ConfigError, load_config
from audience_assets.core.demo import ensure_demo_data
from audience_assets.core.settings import Settings, SettingsError
from audience_assets.definitions import build_definitions
from audience_assets_tests.conftest import REPO, copy_config

LINEAGE = {  # asset -> what it is computed from (README's diagram)
    "partner_data": set(),
    "first_party_customers": set(),
    "suppression_list": set(),
    "clean_room_first_party_table": {"first_party_customers"},
    "clean_room_matches": {"partner_data", "clean_room_first_party_table"},
    "audience_members": {"clean_room_matches", "first_party_customers", "suppression_list"},
    "audience_holdout": {"clean_room_matches", "first_party_customers", "suppression_list"},
    "audience_chunks": {"audience_members", "first_party_customers", "suppression_list"},
    "meta_custom_audience": {"audience_chunks"},
    "meta_lookalike_audience": {"meta_custom_audience"},
}


def test_a_dead_letter_names_every_asset_of_its_failed_step():
    from audience_assets.defs.operations.definitions import assets_of_step

    steps = assets_of_step(list(build_definitions(Settings(demo_data=False)).assets))
    assert steps["audience_selection"] == ["audience_holdout", "audience_members"]
    assert steps["partner_data"] == ["partner_data"]


def test_pyproject_workspace_and_dagster_cloud_name_the_same_location():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    cloud = yaml.safe_load((REPO / "dagster_cloud.yaml").read_text())["locations"][0]
    assert (
        tool["module_name"]
        == workspace["module_name"]
        == cloud["code_source"]["module_name"]
        == "audience_assets.definitions"
    )
    assert tool["code_location_name"] == workspace["location_name"] == cloud["location_name"] == "audience_assets"


def test_local_definitions_load_with_the_whole_lineage(tmp_path: Path):
    defs = build_definitions(Settings(data_dir=tmp_path, demo_data=False))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for asset, parents in LINEAGE.items():
        key = dg.AssetKey(asset)
        assert {p.to_user_string() for p in graph.get(key).parent_keys} == parents, asset
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups["partner_data"] == "ingest" and groups["clean_room_matches"] == "clean_room"
    assert groups["meta_custom_audience"] == "activation"
    config = load_config()
    assert graph.get(dg.AssetKey("partner_data")).partitions_def.get_partition_keys() == sorted(config.partners)
    assert graph.get(dg.AssetKey("audience_members")).partitions_def.get_partition_keys() == sorted(config.audiences)
    assert defs.resolve_sensor_def("landing_zone_sensor").default_status == dg.DefaultSensorStatus.RUNNING


def test_aws_definitions_load_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("AUDIENCE_BUCKET", "AUDIENCE_KMS_KEY_ID", "META_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    defs = build_definitions(Settings(env="aws", data_dir=tmp_path, meta_token_set=True))
    dg.Definitions.validate_loadable(defs)  # secrets are EnvVars, resolved only when a run starts
    assert not (tmp_path / "landing").exists(), "aws mode never seeds demo data"


def test_aws_mode_matches_in_aws_clean_rooms_once_a_membership_is_configured(tmp_path: Path):
    from audience_assets.defs.resources import AwsCleanRoom, LocalCleanRoom, build_resources

    without = build_resources(Settings(env="aws", data_dir=tmp_path))["clean_room"]
    assert isinstance(without, LocalCleanRoom)
    with_membership = build_resources(Settings(env="aws", data_dir=tmp_path, cleanrooms_membership_set=True))[
        "clean_room"
    ]
    assert isinstance(with_membership, AwsCleanRoom)
    aws = {"AUDIENCE_ASSETS_ENV": "aws", "CLEANROOMS_MEMBERSHIP_ID": "m", "AUDIENCE_BUCKET": "data-bucket"}
    assert Settings.from_env({**aws, "AUDIENCE_RESULTS_BUCKET": "results-bucket"}).cleanrooms_membership_set
    for results, words in (
        ({}, "AUDIENCE_RESULTS_BUCKET is not set"),
        ({"AUDIENCE_RESULTS_BUCKET": "data-bucket"}, "can't be within the same S3 bucket as any data source"),
        ({"AUDIENCE_RESULTS_BUCKET": "r", "CLEANROOMS_ANALYSIS_TEMPLATE_ARN": "a"}, "no longer read"),
    ):
        with pytest.raises(SettingsError, match=words):
            Settings.from_env({**aws, **results})
    assert isinstance(
        build_resources(Settings(env="local", data_dir=tmp_path, cleanrooms_membership_set=True))["clean_room"],
        LocalCleanRoom,
    ), "local mode never calls AWS"


def test_an_empty_local_landing_zone_is_seeded_once(tmp_path: Path):
    assert ensure_demo_data(tmp_path) is True
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "landing").rglob("*") if p.is_file())
    assert [f.split("/")[1] for f in files] == ["first_party", "partners", "partners", "suppression"]
    assert ensure_demo_data(tmp_path) is False


def test_an_audience_selecting_an_undeclared_segment_is_a_clear_error(tmp_path: Path):
    config = copy_config(tmp_path / "config", {"young_gamers": {"select": {"acme_data": {"Hobby": ["chess"]}}}})
    with pytest.raises(ConfigError, match=r"young_gamers.*Hobby.*acme_data"):
        load_config(config)


def test_a_headerless_csv_contract_must_name_its_columns(tmp_path: Path):
    config = copy_config(tmp_path / "config")
    partners = config / "partners.yaml"
    partners.write_text(partners.read_text().replace('    delimiter: ";"\n', '    delimiter: ";"\n    header: false\n'))
    with pytest.raises(ConfigError, match=r"partners\.acme_data.*header: false needs column_names"):
        load_config(config)


def test_new_partner_data_flows_on_by_itself_and_everything_has_freshness_and_owners(tmp_path: Path):
    from audience_assets.core.demo import generate

    generate(tmp_path, customers=3_000, seed=1)
    defs = build_definitions(Settings(data_dir=tmp_path, demo_data=False))
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("partner_data")).freshness_policy is not None
    assert graph.get(dg.AssetKey("meta_custom_audience")).freshness_policy is not None
    assert defs.resolve_sensor_def("audience_automation").default_status == dg.DefaultSensorStatus.RUNNING
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners and node.description and node.kinds, key
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the tick before data lands
        for partner in ("acme_data", "beta_insights"):
            assert (
                defs.resolve_job_def("partner_data_job")
                .execute_in_process(partition_key=partner, instance=instance)
                .success
            )
        assert defs.resolve_job_def("first_party_job").execute_in_process(instance=instance).success
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        requested = {key.to_user_string() for key in graph.get_all_asset_keys() if result.get_num_requested(key)}
        assert requested == {"clean_room_first_party_table"}  # the matches wait for it: their deps are not all there
        assert (
            defs.resolve_implicit_global_asset_job_def()
            .get_subset(asset_selection={dg.AssetKey("clean_room_first_party_table")})
            .execute_in_process(instance=instance)
            .success
        )
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert result.get_requested_partitions(dg.AssetKey("clean_room_matches")) == {"acme_data", "beta_insights"}


def test_a_lookalike_follows_its_seeds_syncs_and_is_looked_at_again_every_six_hours(tmp_path: Path):
    """Its seed's sync requests it (its own partition only); a lookalike waiting for a seed Meta is still populating
    is tried again within six hours without the seed changing."""
    defs = build_definitions(Settings(data_dir=tmp_path, demo_data=False))
    seed, lookalike = dg.AssetKey("meta_custom_audience"), dg.AssetKey("meta_lookalike_audience")
    start = dt.datetime(2026, 12, 8, 1, 0, tzinfo=dt.UTC)
    with dg.instance_for_test() as instance:
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=start)
        for audience in ("new_parents", "travel_enthusiasts", "young_gamers"):
            instance.report_runless_asset_event(dg.AssetMaterialization(seed, partition=audience))
        first = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=before.cursor, evaluation_time=start + dt.timedelta(minutes=1)
        )
        assert first.get_requested_partitions(lookalike) == {"new_parents.US-1"}
        instance.report_runless_asset_event(dg.AssetMaterialization(lookalike, partition="new_parents.US-1"))
        quiet = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor, evaluation_time=start + dt.timedelta(hours=1)
        )
        assert not quiet.get_num_requested(lookalike)
        again = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=quiet.cursor, evaluation_time=start + dt.timedelta(hours=5, minutes=1)
        )
        assert again.get_requested_partitions(lookalike) == {"new_parents.US-1"}


def test_each_audience_is_refreshed_on_its_own_cron(tmp_path: Path):
    config = copy_config(tmp_path / "config", {"young_gamers": {"refresh_cron": "0 9 * * 1"}})
    defs = build_definitions(Settings(data_dir=tmp_path / "data", config_dir=config, demo_data=False))
    requested = {}
    for schedule in defs.schedules or []:
        if schedule.name.startswith("audience_refresh_"):
            assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
            context = dg.build_schedule_context(
                repository_def=defs.get_repository_def(),
                scheduled_execution_time=dt.datetime(2026, 12, 7, 6, tzinfo=dt.UTC),
            )
            runs = schedule.evaluate_tick(context).run_requests or []
            requested[schedule.cron_schedule] = sorted(r.partition_key for r in runs)
    assert requested == {"0 6 * * *": ["new_parents", "travel_enthusiasts"], "0 9 * * 1": ["young_gamers"]}
