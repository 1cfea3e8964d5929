"""The shipped analyses under the rules a collaboration can carry: the default CUSTOM rule, LIST rules with
an OR join (the legacy engine), aggregation thresholds on the overlap count, and configuration that cannot
work refused at load."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml

from audience_assets.core import layout
from audience_assets.core.cleanroom import collaboration, protected_query
from audience_assets.core.cleanroom.rules import ConfiguredTable, rule_from_policy
from audience_assets.core.cleanroom.tables import PARTNER_COLUMNS, first_party_columns
from audience_assets.core.cleanroom.templates import render_match, render_overlap
from audience_assets.core.config import ConfigError, load_config
from audience_assets.core.store import LocalStore
from audience_assets.defs.resources import LocalCleanRoom
from audience_assets.standins.local_clean_room import AnalysisTemplate, LocalCollaboration
from audience_assets_tests.conftest import copy_config

# customers c1..c6; acme knows e1 (by email), p2 (by phone), e3+p3 (both), e9/p9 (nobody), and c4's email twice
FIRST_PARTY = (
    "SELECT * FROM (VALUES ('c1','e1','p1'), ('c2','e2','p2'), ('c3','e3','p3'), ('c4','e4',NULL), "
    "('c5',NULL,'p5'), ('c6',NULL,NULL)) t(customer_id, hashed_email, hashed_phone)"
)
PARTNER = (
    "SELECT * FROM (VALUES ('e1',NULL,NULL,1,'Interest','golf'), (NULL,'p2',NULL,2,'Interest','chess'), "
    "('e3','p3',NULL,3,'Age Band','25-34'), ('e9','p9',NULL,4,'Interest','golf'), "
    "('e4',NULL,NULL,5,'Interest','golf'), "
    "('e4',NULL,NULL,5,'Age Band','35-44'), (NULL,NULL,'m1',6,NULL,NULL)) "
    "t(hashed_email, hashed_phone, hashed_madid, partner_identity, segment_name, segment_value)"
)
EXPECTED = sorted(
    [
        ("c1", "Interest", "golf"),
        ("c2", "Interest", "chess"),
        ("c3", "Age Band", "25-34"),
        ("c4", "Interest", "golf"),
        ("c4", "Age Band", "35-44"),
    ]
)


def _storage(tmp_path: Path, partners: list[str]) -> LocalStore:
    storage = LocalStore(str(tmp_path / "data"))
    duckdb.sql(f"COPY ({FIRST_PARTY}) TO '{tmp_path / 'fp.parquet'}' (FORMAT parquet)")
    duckdb.sql(f"COPY ({PARTNER}) TO '{tmp_path / 'p.parquet'}' (FORMAT parquet)")
    storage.upload(tmp_path / "fp.parquet", layout.CLEAN_ROOM_FIRST_PARTY)
    for partner in partners:
        storage.upload(tmp_path / "p.parquet", layout.partner_table(partner))
    return storage


def _config(tmp_path: Path, first_party_rule: dict | None = None, partner_rule: dict | None = None, **partner_settings):
    folder = copy_config(tmp_path / "config")
    data = yaml.safe_load((folder / "partners.yaml").read_text())
    if first_party_rule:
        data["first_party"]["clean_room"] = {"analysis_rule": first_party_rule}
    for partner in data["partners"]:
        data["partners"][partner]["clean_room"] = {
            **({"analysis_rule": partner_rule} if partner_rule else {}),
            **partner_settings,
        }
    (folder / "partners.yaml").write_text(yaml.safe_dump(data))
    return load_config(folder)


def _matches(storage: LocalStore) -> list[tuple]:
    with storage.local_copy(layout.matches("acme_data")) as path:
        return duckdb.sql(f"SELECT * FROM '{path}' ORDER BY ALL").fetchall()


def test_default_custom_rule_matches_on_any_key_and_counts_the_overlap(tmp_path):
    storage = _storage(tmp_path, ["acme_data"])
    result = LocalCleanRoom().match(storage, _config(tmp_path), "acme_data", "run-1")
    assert _matches(storage) == EXPECTED
    assert (result.rows, result.matched_customers, result.first_party_customers) == (5, 4, 6)
    assert result.matched_partner_identities == 4  # e1, p2, e3+p3, e4
    assert result.partner_identities == 6  # e9/p9 and the device-only m1 did not match
    assert result.query.statuses == ("SUBMITTED", "SUCCESS")
    assert storage.get_bytes(f"{layout.clean_room_results('acme_data')}run-1/{result.query.id}/part-00000.parquet")


def test_the_default_partner_rule_keeps_identity_numbers_in_like_the_digests():
    """`partner_identity` only serves the overlap count: the default rule lets it out no more than the digests."""
    assert collaboration.partner_rule(None, "acme_data").disallowed_output_columns == {
        "hashed_email",
        "hashed_phone",
        "hashed_madid",
        "partner_identity",
    }


def test_a_partner_table_from_an_earlier_version_is_refused_with_the_fix(tmp_path):
    """A table published before partner_identity existed cannot run the analyses: the run says which asset
    to materialize again instead of failing inside the engine."""
    storage = _storage(tmp_path, [])
    duckdb.sql(
        f"COPY (SELECT * EXCLUDE (partner_identity) FROM ({PARTNER})) TO '{tmp_path / 'old.parquet'}' (FORMAT parquet)"
    )
    storage.upload(tmp_path / "old.parquet", layout.partner_table("acme_data"))
    with pytest.raises(ValueError, match=r"no column partner_identity: .* materialize partner_data\[acme_data\] again"):
        LocalCleanRoom().match(storage, _config(tmp_path), "acme_data", "run-1")


def test_match_on_all_keys(tmp_path):
    storage = _storage(tmp_path, ["acme_data"])
    result = LocalCleanRoom().match(storage, _config(tmp_path, match_on="all"), "acme_data", "run-1")
    assert _matches(storage) == [("c3", "Age Band", "25-34")] and result.matched_partner_identities == 1


def test_list_rules_with_an_or_join_give_the_same_match(tmp_path):
    storage = _storage(tmp_path, ["acme_data"])
    config = _config(
        tmp_path,
        {
            "list": {
                "joinColumns": ["hashed_email", "hashed_phone"],
                "listColumns": ["customer_id"],
                "allowedJoinOperators": ["OR"],
            }
        },
        {
            "list": {
                "joinColumns": ["hashed_email", "hashed_phone", "hashed_madid"],
                "listColumns": ["segment_name", "segment_value"],
                "allowedJoinOperators": ["OR"],
            }
        },
    )
    result = LocalCleanRoom().match(storage, config, "acme_data", "run-1")
    assert _matches(storage) == EXPECTED
    assert result.matched_partner_identities is None and result.overlap_query is None  # LIST admits no counts


def test_a_list_rule_without_or_refuses_the_any_key_match(tmp_path):
    storage = _storage(tmp_path, ["acme_data"])
    config = _config(
        tmp_path,
        {"list": {"joinColumns": ["hashed_email", "hashed_phone"], "listColumns": ["customer_id"]}},
        {
            "list": {
                "joinColumns": ["hashed_email", "hashed_phone", "hashed_madid"],
                "listColumns": ["segment_name", "segment_value"],
            }
        },
    )
    with pytest.raises(protected_query.ProtectedQueryFailed, match="Join operator OR is not allowed for table"):
        LocalCleanRoom().match(storage, config, "acme_data", "run-1")


def test_a_partner_rule_that_outputs_nothing_of_the_match_refuses_it(tmp_path):
    storage = _storage(tmp_path, ["acme_data"])
    config = _config(
        tmp_path,
        partner_rule={
            "custom": {
                "allowedAnalyses": ["audience_match", "overlap_count"],
                "disallowedOutputColumns": ["segment_value"],
            }
        },
    )
    with pytest.raises(protected_query.ProtectedQueryFailed, match=r"Column\(s\) \[acme_data.segment_value\]"):
        LocalCleanRoom().match(storage, config, "acme_data", "run-1")


@pytest.mark.parametrize(
    "identity, table, minimum, expected",
    [
        ("customer_id", "first_party", 4, [(4, 4)]),
        ("customer_id", "first_party", 5, []),
        ("hashed_email", "acme_data", 3, [(4, 4)]),
        ("hashed_email", "acme_data", 4, []),
    ],
)
def test_overlap_count_respects_aggregation_thresholds(tmp_path, identity, table, minimum, expected):
    duckdb.sql(f"COPY ({FIRST_PARTY}) TO '{tmp_path / 'fp.parquet'}' (FORMAT parquet)")
    duckdb.sql(f"COPY ({PARTNER}) TO '{tmp_path / 'p.parquet'}' (FORMAT parquet)")
    arn = "arn:aws:cleanrooms:us-east-1:111111111111:membership/m/analysistemplate/overlap"
    threshold = {
        "aggregationThresholds": [
            {"identityColumns": [identity], "minimumIdentityCount": minimum, "type": "COUNT_DISTINCT"}
        ]
    }
    tables = []
    for name, path, columns, owner in (
        ("first_party", tmp_path / "fp.parquet", first_party_columns(["EMAIL", "PHONE"]), "1"),
        ("acme_data", tmp_path / "p.parquet", PARTNER_COLUMNS, "2"),
    ):
        policy = {"custom": {"allowedAnalyses": [arn], **(threshold if name == table else {})}}
        tables.append(ConfiguredTable(name, path, columns, rule_from_policy(policy, columns), owner))
    membership = "0b7a1c52-3c4e-4d7b-9a4f-6f1e2d3c4b5a"
    room = LocalCollaboration(
        membership_id=membership,
        account_id="1",
        tables=tables,
        work_dir=tmp_path / "work",
        templates=[AnalysisTemplate(arn, "overlap", render_overlap("acme_data", ["EMAIL", "PHONE"]))],
    )
    done = protected_query.run(
        room,
        membership_id=membership,
        sql_parameters={"analysisTemplateArn": arn},
        bucket="results",
        key_prefix="r",
        what="overlap",
        polling=protected_query.Polling(0, 0),
    )
    parts = done.location.removeprefix("file://")
    assert duckdb.sql(f"SELECT * FROM read_parquet('{parts}*.parquet')").fetchall() == expected
    # the same threshold refuses the row-level audience match: each of its rows is one person
    room.templates[arn] = AnalysisTemplate(arn, "match", render_match("acme_data", ["EMAIL", "PHONE"]))
    with pytest.raises(protected_query.ProtectedQueryFailed, match="aggregate in the outermost SELECT"):
        protected_query.run(
            room,
            membership_id=membership,
            sql_parameters={"analysisTemplateArn": arn},
            bucket="results",
            key_prefix="r",
            what="match",
            polling=protected_query.Polling(0, 0),
        )


@pytest.mark.parametrize(
    "first_party_rule, partner_rule, message",
    [
        (None, {"list": {"joinColumns": ["hashed_email"], "listColumns": ["hashed_email"]}}, "both join and list"),
        (
            None,
            {
                "aggregation": {
                    "aggregateColumns": [{"columnNames": ["segment_value"], "function": "COUNT"}],
                    "joinColumns": ["hashed_email"],
                    "dimensionColumns": [],
                    "scalarFunctions": [],
                    "outputConstraints": [{"columnName": "hashed_email", "minimum": 2, "type": "COUNT_DISTINCT"}],
                }
            },
            "admits only aggregates",
        ),
        (
            None,
            {"list": {"joinColumns": ["hashed_email"], "listColumns": ["segment_name"]}},
            "first_party's rule is CUSTOM",
        ),
        (
            {"custom": {"allowedAnalyses": ["audience_match"], "disallowedOutputColumns": ["hashed_madid"]}},
            None,
            "not among the table's allowed columns",
        ),
    ],
)
def test_clean_room_configuration_that_cannot_work_fails_on_load(tmp_path, first_party_rule, partner_rule, message):
    with pytest.raises(ConfigError, match=message) as failure:
        _config(tmp_path, first_party_rule, partner_rule)
    assert "clean_room.analysis_rule" in str(failure.value)


def test_templates_command_prints_what_to_create_on_aws(capsys):
    from audience_assets.cli import main

    assert main(["templates"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("-- audience_match for") == 2 and printed.count("-- overlap_count for") == 2
    assert "INNER JOIN acme_data p ON fp.hashed_phone = p.hashed_phone" in printed
