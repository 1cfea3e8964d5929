"""The partner's clean-room table: one row per identity and segment attribute, each once; an identity
without any attribute keeps one row with NULL segment, so it still matches."""

from __future__ import annotations

from pathlib import Path

import duckdb

from audience_assets.cleanroom import partner_identities
from audience_assets.config import PartnerContract
from audience_assets.identity import meta_value
from audience_assets.ingestion.sources import ingest_partner
from audience_assets.resources import LocalStorage


def test_identities_and_attributes_are_each_published_once(tmp_path: Path):
    data = tmp_path / "data"
    delivery = data / "landing" / "partners" / "p" / "p.csv"
    delivery.parent.mkdir(parents=True)
    delivery.write_text("email,segment,tier\n"
                        "ann@example.com,travel,gold\n"
                        "ANN@example.com ,travel,silver\n"   # the same person again: travel once, two tiers
                        "bob@example.com,,\n"                # no attribute: one bare row
                        "bob@example.com, ,\n"               # blank is no attribute either
                        "cy@example.com,,gold\n")
    storage = LocalStorage(data_dir=str(data))
    contract = PartnerContract(segments=["segment", "tier"], match_keys=["EMAIL"])
    table = tmp_path / "table.parquet"
    with duckdb.connect() as con:
        report, identities = ingest_partner(con, storage, list(storage.list("landing/partners/p/")), partner="p",
                                            contract=contract, out_table=table, out_quarantine=tmp_path / "q.parquet",
                                            work_dir=tmp_path)
        rows = con.execute(f"SELECT hashed_email, segment_name, segment_value FROM read_parquet('{table}') "
                           "ORDER BY ALL").fetchall()
        stored = partner_identities(con, table)
    ann, bob, cy = (meta_value("EMAIL", e) for e in ("ann@example.com", "bob@example.com", "cy@example.com"))
    assert sorted(rows, key=str) == sorted([(ann, "segment", "travel"), (ann, "tier", "gold"), (ann, "tier", "silver"),
                                            (bob, None, None), (cy, "tier", "gold")], key=str)
    assert (report.rows_read, report.rows_accepted, identities, stored) == (5, 5, 3, 3)
