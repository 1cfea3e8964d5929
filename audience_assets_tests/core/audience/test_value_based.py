"""Value-based audiences: values parsed on ingest (a person's largest wins), sent as JSON numbers with every
row, members without one left out, a changed value sent again, and the configuration's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from pydantic import ValidationError

from audience_assets.core import layout
from audience_assets.core.audience.plan import read_chunk_json
from audience_assets.core.audience.planning import PlanRefused, make_plan
from audience_assets.core.audience.value import value_alias
from audience_assets.core.config import Audience, FirstPartyContract
from audience_assets.core.duck import sql_path
from audience_assets.core.identity import meta_value
from audience_assets.core.ingestion.first_party import ingest_first_party
from audience_assets.core.store import LocalStore

CRM = """customer_id,email,ltv_usd
C1,ann@example.com,12.5
C2,bob@example.com,
C3,cy@example.com,$20
C4,dee@example.com,10
C4,dee@example.com,30
C5,eve@example.com, 1e2
C6,fay@example.com,-3
C7,gus@example.com,inf
C8,hal@example.com,0
C9,ivy@example.com,"1,200.00"
"""
SPEC = Audience(meta_name="Valued", select={"p": {}}, keys=["EMAIL"], value={"column": "ltv_usd"}, min_size=100)


def ingest(tmp_path: Path, text: str = CRM) -> tuple[LocalStore, Path, object]:
    store = LocalStore(str(tmp_path / "data"))
    export = tmp_path / "crm.csv"
    export.write_text(text)
    store.upload(export, "landing/first_party/crm.csv")
    customers = tmp_path / "customers.parquet"
    with duckdb.connect() as con:
        report = ingest_first_party(
            con,
            store,
            list(store.list("landing/first_party/")),
            contract=FirstPartyContract(default_country="US"),
            keys=["EMAIL"],
            out_customers=customers,
            out_quarantine=tmp_path / "quarantine.parquet",
            work_dir=tmp_path,
            value_columns=["ltv_usd"],
        )
    store.upload(customers, layout.FIRST_PARTY_CUSTOMERS)
    return store, customers, report


def test_values_parse_as_plain_numbers_and_a_person_keeps_their_largest(tmp_path: Path):
    _, customers, report = ingest(tmp_path)
    with duckdb.connect() as con:
        values = dict(
            con.execute(
                f"SELECT customer_id, {value_alias('ltv_usd')} FROM read_parquet({sql_path(customers)})"
            ).fetchall()
        )
    assert values == {
        "C1": 12.5,
        "C2": None,  # blank: no value
        "C3": None,  # a currency sign
        "C4": 30.0,  # two rows of one customer id: the largest value, although the last row's identity wins
        "C5": 100.0,  # an exponent, padded
        "C6": None,  # negative
        "C7": None,  # not finite
        "C8": 0.0,
        "C9": None,  # a thousands separator
    }
    assert report.invalid_summary()["value ltv_usd"] == "4 not a plain non-negative number"
    assert report.rows_read == report.rows_accepted + report.rows_quarantined  # values never quarantine a row


def work(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def members_of(store: LocalStore, tmp_path: Path, ids: list[str], audience: str = "valued") -> None:
    members = tmp_path / "members.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT unnest({ids}) AS customer_id ORDER BY 1) TO {sql_path(members)} (FORMAT parquet)")
    store.upload(members, layout.audience_members(audience))


def many(n: int) -> str:
    rows = [f"M{i},m{i}@example.com,{i}.25" if i % 10 else f"M{i},m{i}@example.com," for i in range(1, n + 1)]
    return "customer_id,email,ltv_usd\n" + "\n".join(rows) + "\n"


def test_the_plan_sends_each_value_as_a_json_number_and_leaves_members_without_one_out(tmp_path: Path):
    store, _, _ = ingest(tmp_path, many(150))
    members_of(store, tmp_path, [f"M{i}" for i in range(1, 151)])
    planned = make_plan(store, "valued", SPEC, "", work(tmp_path, "work"))
    assert planned.keys == ("EMAIL", "LOOKALIKE_VALUE")
    assert planned.desired == 135  # every tenth member has no value
    assert planned.values is not None and planned.values.without_value == 15
    assert planned.values.quantiles["min"] == 1.25 and planned.values.quantiles["max"] == 149.25
    assert sum(n for _, _, n in planned.values.histogram) == 135
    (operation,) = planned.plan.operations
    with duckdb.connect() as con:
        sent = [row for chunk in operation.chunks for row in json.loads(read_chunk_json(con, chunk.path, planned.keys))]
    by_email = {email: value for email, value in sent}
    assert by_email[meta_value("EMAIL", "m7@example.com")] == 7.25  # a JSON number, never a string or a hash
    assert meta_value("EMAIL", "m10@example.com") not in by_email
    assert not planned.cell_problems


def test_a_value_based_audience_whose_members_have_no_value_is_refused(tmp_path: Path):
    store, _, _ = ingest(tmp_path, "customer_id,email,ltv_usd\n" + "".join(f"B{i},b{i}@x.com,\n" for i in range(120)))
    members_of(store, tmp_path, [f"B{i}" for i in range(120)])
    with pytest.raises(PlanRefused, match="none of its members has a value in 'ltv_usd'"):
        make_plan(store, "valued", SPEC, "", work(tmp_path, "work"))


def test_a_changed_value_is_sent_again_and_an_unchanged_one_is_not(tmp_path: Path):
    store, _, _ = ingest(tmp_path, many(150))
    members_of(store, tmp_path, [f"M{i}" for i in range(1, 151)])
    first = make_plan(store, "valued", SPEC, "", work(tmp_path, "first"))
    confirmed = tmp_path / "confirmed.parquet"
    with duckdb.connect() as con:  # Meta confirmed the first plan's rows, one of them with another value
        files = ", ".join(sql_path(c.path) for op in first.plan.operations for c in op.chunks)
        con.execute(
            f"COPY (SELECT row_id, EMAIL, CASE WHEN EMAIL = {meta_value('EMAIL', 'm7@example.com')!r} THEN 99.0 "
            f"ELSE LOOKALIKE_VALUE END AS LOOKALIKE_VALUE FROM read_parquet([{files}])) TO {sql_path(confirmed)} "
            "(FORMAT parquet)"
        )
    store.upload(confirmed, layout.confirmed("valued", "123"))
    again = make_plan(store, "valued", SPEC.model_copy(update={"mode": "mirror"}), "123", work(tmp_path, "again"))
    assert [(op.kind, op.rows) for op in again.plan.operations] == [("add", 1)]


def test_a_plain_audience_becoming_value_based_is_refused_with_the_fix(tmp_path: Path):
    store, _, _ = ingest(tmp_path, many(150))
    members_of(store, tmp_path, [f"M{i}" for i in range(1, 151)])
    plain = make_plan(store, "valued", SPEC.model_copy(update={"value": None}), "", work(tmp_path, "plain"))
    confirmed = tmp_path / "confirmed.parquet"
    with duckdb.connect() as con:
        files = ", ".join(sql_path(c.path) for op in plain.plan.operations for c in op.chunks)
        con.execute(
            f"COPY (SELECT row_id, EMAIL FROM read_parquet([{files}])) TO {sql_path(confirmed)} (FORMAT parquet)"
        )
    store.upload(confirmed, layout.confirmed("valued", "123"))
    with pytest.raises(ValueError, match="cannot switch an audience between plain and value-based"):
        make_plan(store, "valued", SPEC, "123", work(tmp_path, "again"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"keys": ["EMAIL", "LOOKALIKE_VALUE"]}, "LOOKALIKE_VALUE is not a key: make a value-based audience"),
        ({"value": {"column": ""}}, "at least 1 character"),
        ({"lookalikes": [{"country": "US", "ratio": 0.25}]}, "less than or equal to 0.2"),
        ({"lookalikes": [{"country": "US", "ratio": 0.015}]}, "is not a step of 0.01"),
        ({"lookalikes": [{"country": "XX", "ratio": 0.01}]}, "XX is not an ISO 3166-1 alpha-2 country code"),
        ({"lookalikes": [{"country": "us", "ratio": 0.01}]}, "should match pattern"),
        ({"lookalikes": [{"country": "US", "starting_ratio": 0.05, "ratio": 0.05}]}, "must be below ratio"),
        ({"lookalikes": [{"country": "US", "ratio": 0.01}, {"country": "US", "ratio": 0.01}]}, "US-1 twice"),
        ({"mode": "remove", "lookalikes": [{"country": "US", "ratio": 0.01}]}, "lookalikes need a seed"),
    ],
)
def test_the_configuration_refuses_what_meta_would(changes: dict, message: str):
    declared = {"meta_name": "Valued", "select": {"p": {}}, **changes}
    with pytest.raises(ValidationError, match=message):
        Audience.model_validate(declared)


def test_lookalikes_are_named_by_country_and_size():
    audience = Audience.model_validate(
        {
            "meta_name": "Seed",
            "select": {"p": {}},
            "lookalikes": [{"country": "US", "ratio": 0.01}, {"country": "GB", "starting_ratio": 0.01, "ratio": 0.05}],
        }
    )
    assert [lookalike.key for lookalike in audience.lookalikes] == ["US-1", "GB-1-5"]


def test_a_confirmed_record_keeps_values_as_numbers_and_updates_are_no_new_members(tmp_path: Path):
    """What Meta confirmed is written by `update_confirmed` (not by hand): its values stay numbers, so the next plan
    compares and removes with them; rows sent again for a new value add no one to the privacy floor's count."""
    from audience_assets.core.audience.confirmed import update_confirmed

    mirror = SPEC.model_copy(update={"mode": "mirror"})
    store, _, _ = ingest(tmp_path, many(300))  # 270 with a value
    members_of(store, tmp_path, [f"M{i}" for i in range(1, 301)])
    first = make_plan(store, "valued", mirror, "", work(tmp_path, "first"))
    record = tmp_path / "record.parquet"
    with duckdb.connect() as con:
        acknowledged = {op.kind: [c.path for c in op.chunks] for op in first.plan.operations}
        assert update_confirmed(con, keys=first.keys, confirmed=None, acknowledged=acknowledged, out=record) == 270
        kinds = dict(
            con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{record}')").fetchall()
        )
    assert kinds["LOOKALIKE_VALUE"] == "DOUBLE"
    # the next export: M1-M120 spent more (108 held, 12 new), M121-M260 have no value now (126 of them held)
    lines = many(300).splitlines()[1:]
    changed = [
        f"M{i},m{i}@example.com,{i + 1000}" if i <= 120 else f"M{i},m{i}@example.com," if i <= 260 else lines[i - 1]
        for i in range(1, 301)
    ]
    again = tmp_path / "again"
    again.mkdir()
    store, _, _ = ingest(again, "customer_id,email,ltv_usd\n" + "\n".join(changed) + "\n")
    store.upload(record, layout.confirmed("valued", "123"))
    members_of(store, again, [f"M{i}" for i in range(1, 301)])
    planned = make_plan(store, "valued", mirror, "123", work(tmp_path, "plan"))
    assert [(op.kind, op.rows) for op in planned.plan.operations] == [("add", 120), ("remove", 126)]
    assert planned.plan.resent_rows == 108
    with duckdb.connect() as con:  # the removals leave as Meta holds them: values as numbers
        (remove,) = [op for op in planned.plan.operations if op.kind == "remove"]
        sent = [row for c in remove.chunks for row in json.loads(read_chunk_json(con, c.path, planned.keys))]
    assert all(isinstance(value, float) for _, value in sent) and not planned.cell_problems
    # Meta would hold 270 + 12 new - 126 = 156, not 270 + 120 - 126 = 264: below a floor of 200, refused
    with pytest.raises(PlanRefused, match="would leave 156 members on Meta"):
        make_plan(store, "valued", mirror.model_copy(update={"min_size": 200}), "123", work(tmp_path, "floor"))


@pytest.mark.parametrize(
    ("column", "column_names", "message"),
    [
        ("phone", None, "an identifier column of the first-party export"),  # would leave unhashed
        ("customer_id", None, "an identifier column"),
        ("ltv", ["customer_id", "email", "ltv_usd"], "not among first_party's column_names"),
    ],
)
def test_a_value_column_is_never_an_identifier_and_is_one_the_export_has(tmp_path: Path, column, column_names, message):
    import yaml

    from audience_assets.core.config import ConfigError, load_config
    from audience_assets_tests.conftest import copy_config

    config_dir = copy_config(tmp_path / "config", {"new_parents": {"value": {"column": column}}})
    if column_names:
        partners = yaml.safe_load((config_dir / "partners.yaml").read_text())
        partners["first_party"].update(header=False, column_names=column_names)
        (config_dir / "partners.yaml").write_text(yaml.safe_dump(partners))
    with pytest.raises(ConfigError, match=message):
        load_config(config_dir)
