"""Chunk planning: every desired row lands in exactly one chunk of consecutive row ids, whatever the number
of chunks (they are written in groups so that memory does not grow with the audience)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from audience_assets.core.audience.plan import CHUNKS_PER_WRITE, build_rows, plan_upload, read_chunk_json, row_id_sql
from audience_assets.core.duck import sql_path

KEYS = ["EMAIL", "PHONE", "EXTERN_ID"]


def test_many_chunks_are_written_in_groups_and_cover_every_row_once(tmp_path: Path):
    rows, chunk_rows = 1_003, 10
    chunks = -(-rows // chunk_rows)
    assert chunks > 3 * CHUNKS_PER_WRITE  # several write groups, the last one partial
    desired = tmp_path / "desired.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT {row_id_sql(KEYS)} AS row_id, * FROM (SELECT sha256('e' || range) AS EMAIL, "
            f"sha256('p' || range) AS PHONE, 'c' || range AS EXTERN_ID FROM range({rows}))) "
            f"TO {sql_path(desired)} (FORMAT parquet)"
        )
        plan = plan_upload(
            con,
            audience="test",
            mode="add",
            keys=KEYS,
            desired=desired,
            confirmed=None,
            suppression=None,
            out_dir=tmp_path / "plan",
            chunk_rows=chunk_rows,
        )
        (operation,) = plan.operations
        assert [c.index for c in operation.chunks] == list(range(chunks))
        assert [c.rows for c in operation.chunks] == [chunk_rows] * (chunks - 1) + [rows % chunk_rows]
        files = ", ".join(sql_path(c.path) for c in operation.chunks)
        written = con.execute(f"SELECT count(*), count(DISTINCT row_id) FROM read_parquet([{files}])").fetchall()[0]
        assert written == (rows, rows)
        expected = con.execute(f"SELECT row_id FROM read_parquet({sql_path(desired)}) ORDER BY row_id").fetchall()
        for chunk in operation.chunks:  # consecutive runs of the sorted row ids, each in its own file
            ids = con.execute(f"SELECT row_id FROM read_parquet({sql_path(chunk.path)}) ORDER BY row_id").fetchall()
            assert ids == expected[chunk.index * chunk_rows : (chunk.index + 1) * chunk_rows]


def test_payload_rows_are_distinct_even_when_customers_share_every_cell(tmp_path: Path):
    """Members who share every cell become one payload row (Meta would count them once anyway); members who
    differ in any cell stay separate rows."""
    customers, members, out = tmp_path / "customers.parquet", tmp_path / "members.parquet", tmp_path / "rows.parquet"
    keys = ["EMAIL", "PHONE"]
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM (VALUES ('c1', 'e1', 'p1'), ('c2', 'e1', 'p1'), ('c3', 'e1', ''), "
            "('c4', 'e2', 'p2'), ('c5', 'e9', 'p9')) t(customer_id, EMAIL, PHONE)) TO "
            f"{sql_path(customers)} (FORMAT parquet)"
        )
        con.execute(
            f"COPY (SELECT * FROM (VALUES ('c1'), ('c2'), ('c3'), ('c4')) t(customer_id)) "
            f"TO {sql_path(members)} (FORMAT parquet)"
        )
        assert build_rows(con, members=members, customers=customers, keys=keys, out=out) == 3
        rows = con.execute(
            f"SELECT EMAIL, PHONE, row_id = {row_id_sql(keys)} FROM read_parquet({sql_path(out)}) ORDER BY ALL"
        ).fetchall()
        assert rows == [("e1", "", True), ("e1", "p1", True), ("e2", "p2", True)]
        fewer = tmp_path / "fewer.parquet"  # no shared rows: written in one pass
        con.execute(
            f"COPY (SELECT customer_id FROM read_parquet({sql_path(members)}) WHERE customer_id <> 'c2') "
            f"TO {sql_path(fewer)} (FORMAT parquet)"
        )
        assert build_rows(con, members=fewer, customers=customers, keys=keys, out=out) == 3
        assert con.execute(f"SELECT count(*) FROM read_parquet({sql_path(out)})").fetchall() == [(3,)]


def test_a_chunk_reads_as_the_json_meta_takes_with_every_character_kept(tmp_path: Path):
    """DuckDB encodes the chunk's rows: the JSON must be exactly the rows, in row-id order and key order,
    whatever characters an advertiser's own id holds (quotes, backslashes, control characters, emoji)."""
    chunk, empty = tmp_path / "chunk.parquet", tmp_path / "empty.parquet"
    awkward = ['say "hi"', "back\\slash", "line\nbreak\ttab\x01", "Zoë 😀", "", "/slash/"]
    with duckdb.connect() as con:
        con.execute("CREATE TABLE cells (row_id VARCHAR, EMAIL VARCHAR, PHONE VARCHAR, EXTERN_ID VARCHAR)")
        con.executemany(
            "INSERT INTO cells VALUES (?, ?, ?, ?)",
            [(f"r{9 - n}", f"e{n}", "" if n % 2 else f"p{n}", text) for n, text in enumerate(awkward)],
        )
        con.execute(f"COPY cells TO {sql_path(chunk)} (FORMAT parquet)")
        con.execute(f"COPY (SELECT * FROM cells WHERE FALSE) TO {sql_path(empty)} (FORMAT parquet)")
        expected = [
            list(r) for r in con.execute("SELECT PHONE, EXTERN_ID, EMAIL FROM cells ORDER BY row_id").fetchall()
        ]
        text = read_chunk_json(con, chunk, ["PHONE", "EXTERN_ID", "EMAIL"])
        assert json.loads(text) == expected and expected[0][1] == "/slash/"
        assert json.loads(read_chunk_json(con, empty, KEYS)) == []
