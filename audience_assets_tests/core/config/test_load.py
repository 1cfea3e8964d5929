"""Configuration that cannot mean two things: a key repeated in a YAML mapping, names that differ only in case,
two audiences of one Meta name are refused at load with the file, line and name; a name with a quote in it
reaches SQL quoted (`core.duck.ident`) and works."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
import yaml

from audience_assets.core.audience.selection import select_members
from audience_assets.core.config import Audience, ConfigError, PartnerContract, load_config
from audience_assets.core.ingestion.partner import ingest_partner
from audience_assets.core.store import LocalStore
from audience_assets_tests.conftest import copy_config

AUDIENCES_HEAD = "defaults:\n  mode: mirror\naudiences:\n"


def test_a_key_repeated_in_a_mapping_is_refused_with_its_lines(tmp_path: Path):
    config = copy_config(tmp_path / "config")
    text = (config / "audiences.yaml").read_text()
    pasted = text + "  young_gamers:\n    meta_name: pasted twice\n    select: {acme_data: {}}\n"
    (config / "audiences.yaml").write_text(pasted)
    first = text.splitlines().index("  young_gamers:") + 1
    second = len(text.splitlines()) + 1
    with pytest.raises(
        ConfigError, match=re.escape(f"duplicate key 'young_gamers' (first on line {first}, again on line {second})")
    ) as caught:
        load_config(config)
    assert str(config / "audiences.yaml") in str(caught.value)

    partners = (
        (config / "partners.yaml")
        .read_text()
        .replace('    delimiter: ";"\n', '    delimiter: ";"\n    delimiter: ","\n')
    )
    (config / "audiences.yaml").write_text(text)
    (config / "partners.yaml").write_text(partners)
    with pytest.raises(ConfigError, match="duplicate key 'delimiter'"):
        load_config(config)


@pytest.mark.parametrize(
    ("contract", "words"),
    [
        ({"segments": ["Interest", "interest"]}, "'Interest' and 'interest' differ only in case"),
        ({"columns": {"Email": "email"}, "segments": ["EMAIL"]}, "'Email' and 'EMAIL' differ only in case"),
        ({"header": False, "column_names": ["email", "Email"]}, "column_names entries 'email' and 'Email'"),
    ],
)
def test_names_that_differ_only_in_case_are_refused(contract: dict, words: str):
    with pytest.raises(ValueError, match=re.escape(words)):
        PartnerContract(**contract)


def test_two_audiences_of_one_meta_name_are_refused(tmp_path: Path):
    config = copy_config(tmp_path / "config")
    declared = yaml.safe_load((config / "audiences.yaml").read_text())
    declared["audiences"]["young_gamers"]["meta_name"] = declared["audiences"]["new_parents"]["meta_name"].upper()
    (config / "audiences.yaml").write_text(yaml.safe_dump(declared, allow_unicode=True))
    with pytest.raises(ConfigError, match="'new_parents' and 'young_gamers' both name the Meta audience"):
        load_config(config)


def test_a_segment_name_with_a_quote_reaches_sql_quoted(tmp_path: Path):
    """A partner's column called `Interest "main"`: ingested, published and selected on like any other."""
    data = tmp_path / "data"
    delivery = data / "landing" / "partners" / "p" / "p.csv"
    delivery.parent.mkdir(parents=True)
    rows = [f"user{i}@example.com,{'travel' if i % 2 else 'gaming'}" for i in range(40)]
    delivery.write_text('email,"Interest ""main"""\n' + "\n".join(rows) + "\n")
    segment = 'Interest "main"'
    contract = PartnerContract(segments=[segment], match_keys=["EMAIL"])
    store, table = LocalStore(data), tmp_path / "table.parquet"
    with duckdb.connect() as con:
        report, identities = ingest_partner(
            con,
            store,
            list(store.list("landing/partners/p/")),
            partner="p",
            contract=contract,
            out_table=table,
            out_quarantine=tmp_path / "q.parquet",
            work_dir=tmp_path,
        )
        assert (report.rows_read, report.rows_accepted, identities) == (40, 40, 40)
        names = con.execute(f"SELECT DISTINCT segment_name FROM read_parquet('{table}')").fetchall()
        assert names == [(segment,)]
        matches = tmp_path / "matches.parquet"
        con.execute(
            f"COPY (SELECT hashed_email AS customer_id, segment_name, segment_value FROM read_parquet('{table}')) "
            f"TO '{matches}' (FORMAT parquet)"
        )
        customers = tmp_path / "customers.parquet"
        con.execute(f"COPY (SELECT customer_id FROM read_parquet('{matches}')) TO '{customers}' (FORMAT parquet)")
        audience = Audience(meta_name="q", select={"p": {segment: ["travel"]}})
        counts = select_members(
            con,
            audience=audience,
            matches={"p": matches},
            customers=customers,
            suppression=None,
            out=tmp_path / "members.parquet",
            arms_out=tmp_path / "arms.parquet",
        )
    assert counts.members == 20
