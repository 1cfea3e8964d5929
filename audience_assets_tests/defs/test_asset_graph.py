"""A snapshot of the asset graph: keys, dependencies, owners, tags, kinds, groups, automation, partitions,
freshness and checks. A change to any of them shows up here as a diff to read, not as a surprise in the UI.

After an intended change: `AUDIENCE_UPDATE_SNAPSHOTS=1 python -m pytest audience_assets_tests/defs/test_asset_graph.py`,
then review the JSON diff like code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from audience_assets.core.settings import Settings
from audience_assets.definitions import build_definitions

SNAPSHOT = Path(__file__).with_name("asset_graph.json")


def asset_graph(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        condition = node.automation_condition
        out[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_entity_keys),
            "group": node.group_name,
            "owners": sorted(node.owners),
            "kinds": sorted(node.kinds),
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/kind/")},
            "automation": None if condition is None else condition.get_label() or type(condition).__name__,
            "partitions": None if node.partitions_def is None else sorted(node.partitions_def.get_partition_keys()),
            "freshness": type(node.freshness_policy).__name__ if node.freshness_policy else None,
            "pools": sorted(node.pools or []),
            "checks": {
                check.name: {
                    "blocking": graph.get_check_spec(check).blocking,
                    "partitioned": graph.get_check_spec(check).partitions_def is not None,
                }
                for check in sorted(node.check_keys, key=lambda c: c.name)
            },
        }
    return out


def test_the_asset_graph_matches_its_snapshot(tmp_path: Path):
    defs = build_definitions(Settings(data_dir=tmp_path, demo_data=False))
    dg.Definitions.validate_loadable(defs)
    current = asset_graph(defs)
    if os.environ.get("AUDIENCE_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_check_of_a_partitioned_asset_is_partitioned_like_it(tmp_path: Path):
    graph = asset_graph(build_definitions(Settings(data_dir=tmp_path, demo_data=False)))
    for key, node in graph.items():
        for name, check in node["checks"].items():
            assert check["partitioned"] == (node["partitions"] is not None), (key, name)
    assert all(
        node["owners"] == ["team:marketing-data"] and node["tags"]["stage"] == node["group"] for node in graph.values()
    ), "the shared policy reaches every asset"
