"""Two advertisers in one deployment: configuration that keeps them apart, uploads that never cross ad
accounts or wait on each other, and per-tenant cost sums and metrics.

Meta is the Graph API sandbox served on 127.0.0.1 (real HTTP through the real httpx client), where each
tenant's token may write only to its own ad account, so a crossed wire fails loudly rather than silently.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import multiprocessing
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from audience_assets.core import layout
from audience_assets.core.config import ConfigError, load_config
from audience_assets.core.policies import MetaPolicy
from audience_assets.core.settings import Settings
from audience_assets.core.store import LocalStore
from audience_assets.definitions import build_definitions
from audience_assets.defs.activation.meta_audience import meta_pool
from audience_assets.defs.resources import METRICS_FILE, MetaAudiences, build_resources
from audience_assets.headless import STAGES
from audience_assets.standins.graph_sandbox import GraphSandbox, SandboxConfig
from audience_assets_tests.conftest import copy_config
from audience_assets_tests.world import copy_landing

NORTHWIND, SOUTHPAW = "act_2000000001", "act_3000000001"
TENANTS = {
    "northwind": {
        "meta_ad_account_id": NORTHWIND,
        "meta_token_env": "NORTHWIND_META_TOKEN",
        "partners": ["acme_data"],
        "defaults": {"mode": "add"},
    },
    "southpaw": {
        "meta_ad_account_id": SOUTHPAW,
        "meta_token_env": "SOUTHPAW_META_TOKEN",
        "partners": ["beta_insights"],
    },
}


def _config_dir(tmp_path: Path, tenants: dict | None = None, audience_tenants: dict | None = None) -> Path:
    folder = copy_config(tmp_path / "config")
    (folder / "tenants.yaml").write_text(yaml.safe_dump({"tenants": TENANTS if tenants is None else tenants}))
    audiences = yaml.safe_load((folder / "audiences.yaml").read_text())
    audiences["audiences"]["travel_enthusiasts"]["select"] = {"acme_data": {"Interest": ["travel", "outdoors"]}}
    for name, tenant in (
        audience_tenants or {"travel_enthusiasts": "northwind", "young_gamers": "northwind", "new_parents": "southpaw"}
    ).items():
        audiences["audiences"][name]["tenant"] = tenant
    (folder / "audiences.yaml").write_text(yaml.safe_dump(audiences, allow_unicode=True))
    return folder


# ---------------------------------------------------------------------------- configuration


def test_without_tenants_yaml_one_implicit_tenant_keeps_todays_configuration():
    config = load_config()
    assert config.tenant_names == ["default"] and not config.multi_tenant
    assert {config.tenant_of_audience(a) for a in config.audiences} == {"default"}


def test_tenant_defaults_apply_under_the_audiences_own_settings(tmp_path):
    config = load_config(_config_dir(tmp_path))
    assert config.audiences["travel_enthusiasts"].mode == "mirror"  # its own setting wins
    assert config.audiences["young_gamers"].mode == "add"  # audiences.yaml says add too
    assert config.tenant_of_partner("beta_insights") == "southpaw"
    assert config.audiences_of("northwind") == ["travel_enthusiasts", "young_gamers"]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t["southpaw"].update(partners=["beta_insights", "acme_data"]),
            "listed by tenants 'northwind' and 'southpaw'",
        ),
        (lambda t: t["southpaw"].update(partners=[]), r"partner\(s\) \['beta_insights'\] belong to no tenant"),
        (lambda t: t["southpaw"].update(partners=["gamma"]), "unknown partner 'gamma'"),
        (lambda t: t["southpaw"].update(meta_ad_account_id=NORTHWIND), "name the same ad account act_2000000001"),
        (lambda t: t["southpaw"].update(meta_ad_account_id="2000"), "act_<digits>"),
        (lambda t: t["southpaw"].pop("meta_token_env"), "exactly one of meta_token_env and meta_token_secret_id"),
        (lambda t: t["southpaw"].update(meta_token_secret_id="prod/southpaw"), "exactly one of"),
        (lambda t: t["southpaw"].update(defaults={"min_size": 20}), "at least 100"),
        (lambda t: t.update({"Bad Name": t.pop("southpaw")}), "tenant name 'Bad Name'"),
    ],
)
def test_invalid_tenant_configuration_fails_on_load(tmp_path, change, message):
    tenants = {name: dict(spec) for name, spec in TENANTS.items()}
    change(tenants)
    with pytest.raises(ConfigError, match=message):
        load_config(_config_dir(tmp_path, tenants))


@pytest.mark.parametrize(
    "audience_tenants, message",
    [
        (
            {"new_parents": "northwind"},
            "of tenant 'northwind' selects partner\\(s\\) \\['beta_insights'\\] of tenant 'southpaw'",
        ),
        ({"new_parents": "nobody"}, "unknown tenant 'nobody'"),
    ],
)
def test_an_audience_uses_only_its_own_tenants_partners(tmp_path, audience_tenants, message):
    with pytest.raises(ConfigError, match=message):
        load_config(
            _config_dir(
                tmp_path,
                audience_tenants={"travel_enthusiasts": "northwind", "young_gamers": "northwind", **audience_tenants},
            )
        )


def test_a_tenant_named_without_tenants_yaml_fails_on_load(tmp_path):
    folder = copy_config(tmp_path / "config")
    audiences = yaml.safe_load((folder / "audiences.yaml").read_text())
    audiences["audiences"]["new_parents"]["tenant"] = "southpaw"
    (folder / "audiences.yaml").write_text(yaml.safe_dump(audiences, allow_unicode=True))
    with pytest.raises(ConfigError, match="audience 'new_parents' names tenant 'southpaw', but no tenants.yaml"):
        load_config(folder)


def test_a_tenant_without_audiences_yet_activates_nothing(tmp_path):
    """A tenant being onboarded: its partner's data is ingested and matched, no activation assets exist."""
    tenants = {
        **TENANTS,
        "southpaw": {**TENANTS["southpaw"], "partners": []},
        "eastgate": {
            "meta_ad_account_id": "act_4000000001",
            "meta_token_env": "EASTGATE_META_TOKEN",
            "partners": ["beta_insights"],
        },
    }
    config_dir = _config_dir(
        tmp_path, tenants, audience_tenants={"travel_enthusiasts": "northwind", "young_gamers": "northwind"}
    )
    audiences = yaml.safe_load((config_dir / "audiences.yaml").read_text())
    del audiences["audiences"]["new_parents"]
    (config_dir / "audiences.yaml").write_text(yaml.safe_dump(audiences, allow_unicode=True))
    assets = list(
        build_definitions(Settings(data_dir=tmp_path / "data", config_dir=config_dir, demo_data=False)).assets
    )
    keys = {key.to_user_string() for a in assets for key in a.keys}
    assert "northwind/meta_custom_audience" in keys and "clean_room_matches" in keys
    assert not any(k.startswith(("southpaw/", "eastgate/")) for k in keys)


def test_each_tenant_has_its_own_assets_partitions_and_upload_pool(tmp_path):
    from audience_assets.definitions import build_definitions

    config_dir = _config_dir(tmp_path)
    config = load_config(config_dir)
    graph = build_definitions(
        Settings(data_dir=tmp_path / "data", config_dir=config_dir, demo_data=False)
    ).resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert {k: p for k, p in pools.items() if p} == {
        "northwind/meta_custom_audience": {f"meta_api:{NORTHWIND}"},
        "southpaw/meta_custom_audience": {f"meta_api:{SOUTHPAW}"},
        "southpaw/meta_lookalike_audience": {f"meta_api:{SOUTHPAW}"},  # new_parents' lookalike, same account
    }
    for tenant, audiences in (("northwind", ["travel_enthusiasts", "young_gamers"]), ("southpaw", ["new_parents"])):
        for name in ("audience_members", "audience_chunks", "meta_custom_audience"):
            node = graph.get(dg.AssetKey([tenant, name]))
            assert node.partitions_def.get_partition_keys() == audiences
            assert node.tags["tenant"] == tenant
    assert meta_pool(config, "northwind") == f"meta_api:{NORTHWIND}"


# ---------------------------------------------------------------------------- the pipeline for two tenants


class SandboxPacedMeta(MetaAudiences):
    """The Meta resource with its policy scaled to the sandbox's 1.5-second rate window."""

    def policy(self) -> MetaPolicy:
        return MetaPolicy(throttle_base_seconds=0.2, throttle_max_seconds=2.0, usage_window_seconds=1.5)


def _resources(settings: Settings, config):
    """Resources with Meta's back-off scaled to the sandbox's window."""
    resources = build_resources(settings, config)
    assert resources["meta"].sandbox_state is None  # real HTTP to the served sandbox, with per-tenant tokens
    resources["meta"] = SandboxPacedMeta(graph_url=settings.meta_graph_url)
    return resources


def _upload(home: str, data_dir: str, config_dir: str, graph_url: str, tenant: str, audience: str):
    """One tenant's upload run, in a process of its own; returns its metadata and when it finished."""
    config = load_config(config_dir)
    settings = Settings(data_dir=Path(data_dir), config_dir=Path(config_dir), demo_data=False, meta_graph_url=graph_url)
    with dg.DagsterInstance.from_config(home) as instance:
        result = _materialize(
            list(build_definitions(settings).assets),
            _resources(settings, config),
            instance,
            [f"{tenant}/meta_custom_audience"],
            audience,
        )
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    return {k: v.value for k, v in metadata.items() if isinstance(v.value, (int, float, str))}, time.monotonic()


def _materialize(assets, resources, instance, selection, partition=None):
    result = dg.materialize(
        assets,
        selection=selection,
        partition_key=partition,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        tags={"audience_assets/trigger": "test"},
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


@pytest.mark.slow
def test_two_tenants_never_cross_and_one_tenants_throttling_does_not_slow_the_other(landing, tmp_path, monkeypatch):
    copy_landing(landing, tmp_path / "data")
    config_dir = _config_dir(tmp_path)
    config = load_config(config_dir)
    # each token may write only to its own tenant's ad account; northwind's account allows 1 call per 1.5 s
    sandbox = GraphSandbox(
        tmp_path / "graph.sqlite",
        SandboxConfig(
            tokens={"token-northwind": [NORTHWIND], "token-southpaw": [SOUTHPAW]},
            ad_accounts={
                NORTHWIND: {"name": "Northwind", "tos_accepted": True, "rate_limit_calls": 1},
                SOUTHPAW: {"name": "Southpaw", "tos_accepted": True},
            },
            rate_limit_window_seconds=1.5,
        ),
    )
    monkeypatch.setenv("NORTHWIND_META_TOKEN", "token-northwind")
    monkeypatch.setenv("SOUTHPAW_META_TOKEN", "token-southpaw")
    with sandbox.serve() as server:
        settings = Settings(
            data_dir=tmp_path / "data", config_dir=config_dir, demo_data=False, meta_graph_url=server.url
        )
        resources = _resources(settings, config)
        assets = list(build_definitions(settings).assets)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            _materialize(assets, resources, instance, STAGES[0][0])
            for partner in sorted(config.partners):
                _materialize(assets, resources, instance, STAGES[1][0], partner)
            for tenant in config.tenant_names:
                for audience in config.audiences_of(tenant):
                    _materialize(
                        assets,
                        resources,
                        instance,
                        [f"{tenant}/audience_members", f"{tenant}/audience_holdout", f"{tenant}/audience_chunks"],
                        audience,
                    )

            # both tenants upload at once, each in its own process (as two runs would): northwind's account is
            # throttled, southpaw's is not
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {
                    tenant: pool.submit(
                        _upload, str(home), str(tmp_path / "data"), str(config_dir), server.url, tenant, audience
                    )
                    for tenant, audience in (("northwind", "travel_enthusiasts"), ("southpaw", "new_parents"))
                }
                outcome = {tenant: future.result(timeout=300) for tenant, future in futures.items()}
            (north, north_done), (south, south_done) = outcome["northwind"], outcome["southpaw"]
            assert north["seconds_waiting"] > 1 or north["throttled_responses"] > 0
            assert south["throttled_responses"] == 0 and south["seconds_waiting"] == 0
            assert south_done < north_done
            _materialize(assets, resources, instance, ["northwind/meta_custom_audience"], "young_gamers")

            # ad accounts never cross: each audience exists only in its tenant's account
            for audience in config.audiences:
                own = NORTHWIND if config.tenant_of_audience(audience) == "northwind" else SOUTHPAW
                other = SOUTHPAW if own == NORTHWIND else NORTHWIND
                name = config.audiences[audience].meta_name
                assert sandbox.audience_id(name, own) and sandbox.audience_id(name, other) is None

            # data never crosses: northwind's members come only from acme_data's matches, southpaw's from beta's
            storage = LocalStore(str(tmp_path / "data"))
            for audience in config.audiences:
                partner = "acme_data" if config.tenant_of_audience(audience) == "northwind" else "beta_insights"
                with (
                    storage.local_copy(layout.audience_members(audience)) as members,
                    storage.local_copy(layout.matches(partner)) as matches,
                ):
                    strays = duckdb.sql(
                        f"SELECT count(*) FROM '{members}' WHERE customer_id NOT IN "
                        f"(SELECT customer_id FROM '{matches}')"
                    ).fetchall()[0][0]
                assert strays == 0, audience

            # every run carries its tenant; partner and audience runs name theirs
            for run in instance.get_runs():
                if "audience" in run.tags:
                    assert run.tags["tenant"] == config.tenant_of_audience(run.tags["audience"])
                if "partner" in run.tags:
                    assert run.tags["tenant"] == config.tenant_of_partner(run.tags["partner"])
                assert run.tags.get("tenant") in ("northwind", "southpaw", "shared"), run.tags

            # the cost report: per tenant and day, the sums of what every step recorded
            report = _materialize(assets, resources, instance, ["tenant_costs"])
            expected = defaultdict(lambda: defaultdict(float))
            for definition in assets:
                for key in definition.keys:
                    for record in instance.fetch_materializations(key, limit=1000).records:
                        event = record.asset_materialization
                        if "cost/compute_seconds" not in event.metadata or key.to_user_string() == "tenant_costs":
                            continue
                        sums = expected[event.tags["tenant"]]
                        sums["runs"] += 0  # counted below
                        for name in ("rows_processed", "meta_requests", "compute_seconds", "clean_room_query_seconds"):
                            sums[name] += float(event.metadata[f"cost/{name}"].value)
            rows = list(csv.DictReader(io.StringIO((storage.get_bytes(layout.TENANT_COSTS) or b"").decode())))
            assert {r["tenant"] for r in rows} == {"northwind", "southpaw", "shared"}
            for row in rows:
                for name in ("rows_processed", "meta_requests"):
                    assert float(row[name]) == expected[row["tenant"]][name], (row, name)
                assert float(row["compute_seconds"]) == pytest.approx(
                    expected[row["tenant"]]["compute_seconds"], abs=0.01
                )
            assert (
                float(next(r for r in rows if r["tenant"] == "northwind")["meta_requests"]) >= north["api_requests"] > 0
            )
            assert float(next(r for r in rows if r["tenant"] == "southpaw")["meta_requests"]) > 0
            assert float(next(r for r in rows if r["tenant"] == "shared")["meta_requests"]) == 0
            table = report.get_asset_materialization_events()[0].materialization.metadata["costs"]
            assert len(table.value.records) == len(rows)

            # an upload Meta refuses (southpaw's token revoked) counts as a failed upload, like a dead-lettered one
            monkeypatch.setenv("SOUTHPAW_META_TOKEN", "token-revoked")
            refused = dg.materialize(
                assets,
                selection=["southpaw/meta_custom_audience"],
                partition_key="new_parents",
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
            assert not refused.success

    # metrics: the local file parses as Prometheus text, with one series per tenant and audience
    assert (tmp_path / "data" / METRICS_FILE).stat().st_mode & 0o777 == 0o644  # readable by a scraper's user
    families = {f.name: f for f in text_string_to_metric_families((tmp_path / "data" / METRICS_FILE).read_text())}
    failures = {
        (s.labels["tenant"], s.labels["audience"]): s.value for s in families["audience_assets_upload_failures"].samples
    }
    assert failures == {
        ("northwind", "travel_enthusiasts"): 0,
        ("northwind", "young_gamers"): 0,
        ("southpaw", "new_parents"): 1,
    }
    uploaded = {
        (s.labels["tenant"], s.labels["audience"]): s.value for s in families["audience_assets_rows_uploaded"].samples
    }
    assert uploaded[("southpaw", "new_parents")] == south["rows_sent"]
    assert uploaded[("northwind", "travel_enthusiasts")] == north["rows_sent"]
    rates = {(s.labels["tenant"], s.labels["partner"]): s.value for s in families["audience_assets_match_rate"].samples}
    assert set(rates) == {("northwind", "acme_data"), ("southpaw", "beta_insights")} and all(
        0 < v < 1 for v in rates.values()
    )
    throttled = {
        s.labels["tenant"]: s.value
        for s in families["audience_assets_throttled_requests"].samples
        if s.labels["audience"] in ("travel_enthusiasts", "new_parents")
    }
    assert throttled["southpaw"] == 0
