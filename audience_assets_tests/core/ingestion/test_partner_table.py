"""The partner's clean-room table: one row per identity and segment attribute, each once; an identity
without any attribute keeps one row with NULL segment, so it still matches; every identity has its own
`partner_identity` number on all its rows."""

from __future__ import annotations

from pathlib import Path

import duckdb

from audience_assets.core.cleanroom.tables import partner_identities
from audience_assets.core.config import PartnerContract
from audience_assets.core.identity import meta_value
from audience_assets.core.ingestion.partner import ingest_partner
from audience_assets.core.store import LocalStore

ANN, BOB, CY = (meta_value("EMAIL", e) for e in ("ann@example.com", "bob@example.com", "cy@example.com"))


def publish(tmp_path: Path, lines: list[str]) -> tuple[list[tuple], int, int, int]:
    """Ingest a delivery of `email,segment,tier` lines: the table's rows, rows read, identities, stored count."""
    data = tmp_path / "data"
    delivery = data / "landing" / "partners" / "p" / "p.csv"
    delivery.parent.mkdir(parents=True)
    delivery.write_text("\n".join(["email,segment,tier", *lines]) + "\n")
    storage = LocalStore(str(data))
    contract = PartnerContract(segments=["segment", "tier"], match_keys=["EMAIL"])
    table = tmp_path / "table.parquet"
    with duckdb.connect() as con:
        report, identities = ingest_partner(
            con,
            storage,
            list(storage.list("landing/partners/p/")),
            partner="p",
            contract=contract,
            out_table=table,
            out_quarantine=tmp_path / "q.parquet",
            work_dir=tmp_path,
        )
        rows = con.execute(f"SELECT hashed_email, segment_name, segment_value FROM read_parquet('{table}')").fetchall()
        # one number per identity, the same on each of its rows, and no two identities share one
        numbers = con.execute(
            f"SELECT count(DISTINCT partner_identity), count(DISTINCT (hashed_email, hashed_phone)), "
            f"count(DISTINCT (partner_identity, hashed_email, hashed_phone)), count(partner_identity) "
            f"FROM read_parquet('{table}')"
        ).fetchall()[0]
        assert numbers == (identities,) * 3 + (len(rows),)
        return sorted(rows, key=str), report.rows_read, identities, partner_identities(con, table)


def test_identities_and_attributes_are_each_published_once(tmp_path: Path):
    rows = publish(
        tmp_path,
        [
            "ann@example.com,travel,gold",
            "ANN@example.com ,travel,silver",  # the same person again: travel once, two tiers
            "bob@example.com,,",  # no attribute: one bare row
            "bob@example.com, ,",  # blank is no attribute either
            "cy@example.com,,gold",
        ],
    )
    assert rows == (
        sorted(
            [
                (ANN, "segment", "travel"),
                (ANN, "tier", "gold"),
                (ANN, "tier", "silver"),
                (BOB, None, None),
                (CY, "tier", "gold"),
            ],
            key=str,
        ),
        5,
        3,
        3,
    )


def test_a_person_described_the_same_way_twice_is_published_once(tmp_path: Path):
    """The usual delivery (every identity's rows agree) takes the path without a DISTINCT: same guarantees."""
    rows = publish(
        tmp_path,
        [
            "ann@example.com,travel,gold",
            "ANN@example.com ,travel ,gold",  # the same description again
            "bob@example.com,,",
            "bob@example.com,,",
            "cy@example.com,,gold",
        ],
    )
    assert rows == (
        sorted([(ANN, "segment", "travel"), (ANN, "tier", "gold"), (BOB, None, None), (CY, "tier", "gold")], key=str),
        5,
        3,
        3,
    )
