"""The upload plan, one type from the moment it is written to the last acknowledged batch.

An audience's members become Meta payload rows (one `row_id` per distinct row, a SHA-256 of its cells),
compared with what Meta last confirmed, and written as the operations its sync mode needs (add, remove,
replace) in chunks of at most `MAX_ROWS_PER_REQUEST` (Meta's limit). The plan's `upload_id` is a digest
of exactly what is to be sent, so a rerun of the same plan resumes its ledger and a changed plan starts
afresh. `store_plan` uploads the chunks and the plan document; `load_plan` reads it back for the upload. What
Meta holds on record, compared here and updated after an upload, is `core.audience.confirmed`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import duckdb

from audience_assets.core import layout
from audience_assets.core.audience.confirmed import confirmed_cells
from audience_assets.core.audience.ldu import FIELDS as LDU_FIELDS
from audience_assets.core.audience.ldu import LDU
from audience_assets.core.audience.value import FIELD as VALUE_FIELD
from audience_assets.core.duck import DIGEST_PARQUET, ident, literal, sql_path
from audience_assets.core.graph_api import MAX_ROWS_PER_REQUEST
from audience_assets.core.store import Store

Kind = Literal["add", "remove", "replace"]
# Fields of a row that are not part of its id (LDU, a value): a change of them alone is sent again as an add.
ATTRIBUTE_FIELDS = (*LDU_FIELDS, VALUE_FIELD)


@dataclasses.dataclass(frozen=True)
class Chunk:
    index: int  # 0-based position within its operation
    rows: int
    key: str  # where the chunk's rows are stored
    digest: str = ""  # SHA-256 of its sorted row ids
    path: Path | None = None  # the local file, while the plan is being written


@dataclasses.dataclass(frozen=True)
class Operation:
    kind: Kind
    chunks: tuple[Chunk, ...]

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)


@dataclasses.dataclass(frozen=True)
class Plan:
    upload_id: str
    schema: tuple[str, ...]
    operations: tuple[Operation, ...]
    mode: str = ""
    desired_rows: int = 0
    confirmed_rows: int = 0
    # rows Meta holds that this plan takes away although nobody opted out (mirror and replace only): what
    # a broken delivery upstream would inflate, so it is reviewed before sending (`core.audience.approval`)
    removals_to_review: int = 0
    ldu_rows: int = 0  # desired rows marked Limited Data Use (audiences with data_processing)
    # added rows Meta already holds, sent again for a changed LDU status or value: not new members
    resent_rows: int = 0
    # the Meta audience whose confirmed rows the plan was made against ("": nothing on record); a plan is
    # only sent to that audience (`core.audience.planning.needs_rebase`)
    basis_audience_id: str = ""
    basis_version: str = ""  # the version of that audience's record the plan was made against ("": none)

    def rows(self, kind: str) -> int:
        return sum(op.rows for op in self.operations if op.kind == kind)

    def document(self, audience: str) -> dict[str, Any]:
        return {
            "audience": audience,
            "mode": self.mode,
            "upload_id": self.upload_id,
            "schema": list(self.schema),
            "desired_rows": self.desired_rows,
            "confirmed_rows": self.confirmed_rows,
            "removals_to_review": self.removals_to_review,
            "ldu_rows": self.ldu_rows,
            "resent_rows": self.resent_rows,
            "basis_audience_id": self.basis_audience_id,
            "basis_version": self.basis_version,
            "operations": [
                {
                    "kind": op.kind,
                    "rows": op.rows,
                    "chunks": [{"index": c.index, "rows": c.rows, "key": c.key, "digest": c.digest} for c in op.chunks],
                }
                for op in self.operations
            ],
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Plan:
        return cls(
            document["upload_id"],
            tuple(document["schema"]),
            tuple(
                Operation(
                    op["kind"], tuple(Chunk(c["index"], c["rows"], c["key"], c.get("digest", "")) for c in op["chunks"])
                )
                for op in document["operations"]
            ),
            document.get("mode", ""),
            document.get("desired_rows", 0),
            document.get("confirmed_rows", 0),
            _removals_to_review(document),
            document.get("ldu_rows", 0),
            document.get("resent_rows", 0),
            # a plan stored before plans named their basis was made against the record kept under the
            # audience's name: it is made again against the bound audience's record before it is sent
            document.get("basis_audience_id", "legacy"),
            document.get("basis_version", ""),
        )


def _removals_to_review(document: Mapping[str, Any]) -> int:
    """A plan stored before removals were reviewed counts every row it takes away (opt-outs included):
    an old plan is held rather than waved through."""
    if "removals_to_review" in document:
        return int(document["removals_to_review"])
    rows = {op["kind"]: op["rows"] for op in document["operations"]}
    if document.get("mode") == "replace":
        return max(0, int(document.get("confirmed_rows", 0)) - int(rows.get("replace", 0)))
    return int(rows.get("remove", 0)) if document.get("mode") == "mirror" else 0


def store_plan(store: Store, audience: str, plan: Plan) -> Plan:
    """Upload the plan's chunk files and write the plan document; returns the plan as stored (no paths)."""
    for op in plan.operations:
        for chunk in op.chunks:
            assert chunk.path is not None, "a stored plan's chunks are already stored"
            store.upload(chunk.path, chunk.key)
    stored = dataclasses.replace(
        plan,
        operations=tuple(
            Operation(op.kind, tuple(dataclasses.replace(c, path=None) for c in op.chunks)) for op in plan.operations
        ),
    )
    store.put_bytes(layout.upload_plan(audience), json.dumps(stored.document(audience), indent=1).encode())
    return stored


def load_plan(store: Store, audience: str) -> Plan | None:
    raw = store.get_bytes(layout.upload_plan(audience))
    return Plan.from_document(json.loads(raw)) if raw is not None else None


def _parquet(path: Path) -> str:
    return f"read_parquet({sql_path(path)})"


def row_id_sql(keys: Sequence[str]) -> str:
    return "sha256(concat_ws('|', " + ", ".join(ident(k) for k in keys) + "))"


def build_rows(
    con: duckdb.DuckDBPyConnection,
    *,
    members: Path,
    customers: Path,
    keys: Sequence[str],
    out: Path,
    extra: Sequence[str] = (),
    where: str = "TRUE",
    prefer: str = "1",
    largest: str | None = None,
) -> int:
    """Write the members' distinct Meta payload rows (`row_id` + one column per key) to `out`.

    Two customers give the same row only when they share every cell, which is rare (and impossible when
    EXTERN_ID is the customer id), so rows are written as they come and deduplicated only when their
    row ids (digests of the cells) show a repeat: counting row ids costs far less than hashing whole rows.
    `extra` are further `<expression> AS "<FIELD>"` columns (Limited Data Use, `core.audience.ldu`; a customer
    value, `core.audience.value`): part of the row but not of its id (the id is the person's identifiers), so a
    change of them alone is sent again as an add (see `_operations_sql`), never as a removal. Of rows sharing an
    id, the first in `prefer`'s order is kept, with the largest of their `largest` field. Only customers for whom
    `where` holds are written."""
    cells = ", ".join([*(ident(k) for k in keys), *extra])
    rows = (
        f"SELECT {row_id_sql(keys)} AS row_id, * FROM (SELECT {cells} FROM {_parquet(customers)} "
        f"WHERE customer_id IN (SELECT customer_id FROM {_parquet(members)}) AND ({where}))"
    )
    con.execute(f"COPY ({rows}) TO {sql_path(out)} ({DIGEST_PARQUET})")
    total, distinct = con.execute(f"SELECT count(*), count(DISTINCT row_id) FROM {_parquet(out)}").fetchall()[0]
    if total != distinct:
        most = f" REPLACE (max({ident(largest)}) OVER (PARTITION BY row_id) AS {ident(largest)})" if largest else ""
        con.execute(
            f"COPY (SELECT *{most} FROM ({rows}) QUALIFY row_number() OVER (PARTITION BY row_id ORDER BY {prefer}) "
            f"= 1) TO {sql_path(out)} ({DIGEST_PARQUET})"
        )
    return distinct


def _operations_sql(
    mode: str, desired: str, confirmed: str, suppressed: str, keys: Sequence[str] = ()
) -> dict[str, str]:
    """The rows of each operation, by sync mode (see audiences.yaml). With Limited Data Use fields or a value among
    `keys`, a row Meta holds whose LDU fields or value changed is added again (Meta updates the record)."""
    gone = f"SELECT * FROM {confirmed} WHERE row_id IN ({suppressed})"  # opted out after an earlier upload
    new = f"row_id NOT IN (SELECT row_id FROM {confirmed})"
    attributes = [k for k in ATTRIBUTE_FIELDS if k in keys]
    if attributes:
        differs = " OR ".join(f"d.{ident(k)} IS DISTINCT FROM c.{ident(k)}" for k in attributes)
        new += f" OR row_id IN (SELECT d.row_id FROM {desired} d JOIN {confirmed} c USING (row_id) WHERE {differs})"
    if mode == "mirror":
        return {
            "add": f"SELECT * FROM {desired} WHERE {new}",
            "remove": f"SELECT * FROM {confirmed} WHERE row_id NOT IN (SELECT row_id FROM {desired})",
        }
    if mode == "add":  # members Meta already holds are not sent again (unless their LDU values changed)
        return {"add": f"SELECT * FROM {desired} WHERE {new}", "remove": gone}
    if mode == "remove":
        return {"remove": f"SELECT * FROM {desired} UNION {gone}"}
    if mode == "replace":
        return {"replace": f"SELECT * FROM {desired}"}
    raise ValueError(f"unknown sync mode {mode!r}")


CHUNKS_PER_WRITE = 16  # chunks written per pass: at 10,000 rows of 14 digests, about 150 MB in flight


def plan_upload(
    con: duckdb.DuckDBPyConnection,
    *,
    audience: str,
    mode: str,
    keys: Sequence[str],
    desired: Path,
    confirmed: Path | None,
    suppression: Path | None,
    out_dir: Path,
    chunk_rows: int = MAX_ROWS_PER_REQUEST,
) -> Plan:
    """Write each operation's rows as chunk files under `out_dir/<kind>/` and return the plan (each chunk
    with its local file and the key `store_plan` will put it at).

    The plan's `upload_id` is a digest of exactly what is to be sent (mode, keys and every row id), so a
    rerun of the same plan resumes its ledger and a changed plan starts afresh."""
    if not 0 < chunk_rows <= MAX_ROWS_PER_REQUEST:
        raise ValueError(f"chunk_rows must be 1..{MAX_ROWS_PER_REQUEST} (Meta's limit per request)")
    _compared_rows(con, keys, desired, confirmed)
    suppressed = _suppressed_rows_sql(keys, suppression)
    digest = hashlib.sha256(f"{mode}|{','.join(keys)}".encode())
    written: list[tuple[str, list[tuple[int, int, Path, str]]]] = []
    operations_sql = _operations_sql(mode, "aa_desired", "aa_confirmed", suppressed, keys)
    for kind, sql in operations_sql.items():
        chunks = _write_chunks(con, sql, keys, out_dir / kind, chunk_rows)
        for index, _, _, chunk_digest in chunks:
            digest.update(f"|{kind}:{index}:{chunk_digest}".encode())
        if chunks:
            written.append((kind, chunks))
    upload_id = digest.hexdigest()[:32]
    operations = tuple(
        Operation(
            kind, tuple(Chunk(i, n, layout.chunk(audience, upload_id, kind, i), d, path) for i, n, path, d in chunks)
        )
        for kind, chunks in written
    )
    desired_rows, confirmed_rows, leaving, ldu_rows = _plan_counts(con, mode, keys, suppressed)
    # only a changed LDU status or value sends a row Meta holds again: without them, no add is a resend
    resends = "add" in operations_sql and any(k in keys for k in ATTRIBUTE_FIELDS)
    resent = (
        con.execute(
            f"SELECT count(*) FROM ({operations_sql['add']}) WHERE row_id IN (SELECT row_id FROM aa_confirmed)"
        ).fetchall()[0][0]
        if resends
        else 0
    )
    return Plan(upload_id, tuple(keys), operations, mode, desired_rows, confirmed_rows, leaving, ldu_rows, resent)


def _compared_rows(con: duckdb.DuckDBPyConnection, keys: Sequence[str], desired: Path, confirmed: Path | None) -> None:
    """The views every operation's SQL compares: `aa_desired` (the rows wanted) and `aa_confirmed` (the rows
    Meta holds, none when nothing is on record), both as `row_id` plus the audience's keys."""
    cells = ", ".join(ident(k) for k in keys)
    con.execute(f"CREATE OR REPLACE TEMP VIEW aa_desired AS SELECT row_id, {cells} FROM {_parquet(desired)}")
    if confirmed is not None:
        held_cells = confirmed_cells(con, confirmed, keys)
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW aa_confirmed AS SELECT row_id, {held_cells} FROM {_parquet(confirmed)}"
        )
    else:
        con.execute("CREATE OR REPLACE TEMP VIEW aa_confirmed AS SELECT * FROM aa_desired WHERE FALSE")


def _write_chunks(
    con: duckdb.DuckDBPyConnection, sql: str, keys: Sequence[str], folder: Path, chunk_rows: int
) -> list[tuple[int, int, Path, str]]:
    """Write one operation's rows (`sql`) as chunk files under `folder`: (index, rows, file, digest of its row
    ids) per chunk, in order."""
    cells = ", ".join(ident(k) for k in keys)
    # Chunks are consecutive runs of row ids. Only the ids are sorted; the wide rows are then streamed
    # once into their chunk's file (in no particular order: a chunk is read sorted, 10,000 rows at most).
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE aa_op AS SELECT row_id, (row_number() OVER (ORDER BY row_id) - 1) "
        f"// {chunk_rows} AS aa_chunk FROM (SELECT row_id FROM ({sql}))"
    )
    stats = con.execute(
        "SELECT aa_chunk, count(*), sha256(string_agg(row_id, ',' ORDER BY row_id)) FROM aa_op "
        "GROUP BY aa_chunk ORDER BY aa_chunk"
    ).fetchall()
    if stats:
        folder.mkdir(parents=True, exist_ok=True)
    # A partitioned write holds every open partition's rows until it ends, so chunks are written a
    # bounded group at a time: memory stays at CHUNKS_PER_WRITE chunks whatever the audience's size.
    for first in range(0, len(stats), CHUNKS_PER_WRITE):
        con.execute(
            f"COPY (SELECT o.row_id, {cells}, o.aa_chunk FROM ({sql}) r JOIN aa_op o ON o.row_id = r.row_id "
            f"WHERE o.aa_chunk BETWEEN {first} AND {first + CHUNKS_PER_WRITE - 1}) "
            f"TO {sql_path(folder)} ({DIGEST_PARQUET}, PARTITION_BY (aa_chunk), OVERWRITE_OR_IGNORE)"
        )
    chunks = []
    for index, rows, chunk_digest in stats:
        files = sorted((folder / f"aa_chunk={index}").glob("*.parquet"))
        if len(files) != 1:
            raise RuntimeError(f"expected one Parquet file for chunk {index} of {folder.name}, found {len(files)}")
        chunks.append((int(index), int(rows), files[0], chunk_digest))
    return chunks


def _plan_counts(
    con: duckdb.DuckDBPyConnection, mode: str, keys: Sequence[str], suppressed: str
) -> tuple[int, int, int, int]:
    """Desired rows, confirmed rows, the rows the plan takes away although nobody opted out (reviewed before
    sending), and the desired rows marked Limited Data Use."""
    leaving = (
        f"(SELECT count(*) FROM aa_confirmed WHERE row_id NOT IN (SELECT row_id FROM aa_desired) "
        f"AND row_id NOT IN ({suppressed}))"
        if mode in ("mirror", "replace")
        else "0"
    )
    ldu = (
        f'(SELECT count(*) FROM aa_desired WHERE "{LDU_FIELDS[0]}" = {literal(LDU)})' if LDU_FIELDS[0] in keys else "0"
    )
    counts = con.execute(
        f"SELECT (SELECT count(*) FROM aa_desired), (SELECT count(*) FROM aa_confirmed), {leaving}, {ldu}"
    ).fetchall()[0]
    return counts[0], counts[1], counts[2], counts[3]


def _suppressed_rows_sql(keys: Sequence[str], suppression: Path | None) -> str:
    """Row ids of confirmed rows that belong to someone on the opt-out list."""
    if suppression is None:
        return "SELECT NULL WHERE FALSE"
    s = _parquet(suppression)
    parts = [
        f"SELECT c.row_id FROM aa_confirmed c JOIN {s} s ON c.{k} = s.{col}"
        for k, col in (("EMAIL", "hashed_email"), ("PHONE", "hashed_phone"))
        if k in keys
    ]
    if "MADID" in keys:
        parts.append(f"SELECT c.row_id FROM aa_confirmed c JOIN {s} s ON sha256(nullif(c.MADID, '')) = s.hashed_madid")
    return " UNION ".join(parts) or "SELECT NULL WHERE FALSE"


def read_chunk_json(con: duckdb.DuckDBPyConnection, path: Path, keys: Sequence[str]) -> str:
    """One chunk's payload rows as the JSON array Meta's `data` takes, cells in `keys` order, rows in
    row-id order. DuckDB encodes it: the 140,000 cells of a full chunk never become Python objects. Limited Data
    Use fields leave as JSON values (an array, numbers), every other cell as a string."""
    cells = ", ".join(f"CAST({ident(k)} AS JSON)" if k in LDU_FIELDS else f"to_json({ident(k)})" for k in keys)
    rows = con.execute(
        f"SELECT to_json(coalesce(list([{cells}] ORDER BY row_id), [])) FROM {_parquet(path)}"
    ).fetchall()
    return rows[0][0]
