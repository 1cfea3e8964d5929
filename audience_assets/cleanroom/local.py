"""A local clean room: analyses run in DuckDB over the configured tables' Parquet files.

Queries follow the protected-query lifecycle of AWS Clean Rooms (SUBMITTED -> STARTED -> SUCCESS or
FAILED), and results are written as Parquet, so the asset code is the same for both engines.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from audience_assets.duck import connect, sql_path


@dataclasses.dataclass
class ProtectedQuery:
    id: str
    status: str
    sql: str
    result_path: Path | None = None
    error: str | None = None
    rows: int = 0
    duration_ms: int = 0
    history: list[str] = dataclasses.field(default_factory=list)

    def move(self, status: str) -> None:
        self.status = status
        self.history.append(status)


class LocalCleanRoomEngine:
    """Configured tables (association name -> Parquet file) and the queries run against them."""

    def __init__(self, tables: Mapping[str, Path], results_dir: Path):
        self.tables, self.results_dir = dict(tables), results_dir

    def run(self, sql: str) -> ProtectedQuery:
        query = ProtectedQuery(str(uuid.uuid4()), "SUBMITTED", sql, history=["SUBMITTED"])
        started = time.monotonic()
        query.move("STARTED")
        out = self.results_dir / query.id / "result.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with connect() as con:
                for name, path in self.tables.items():
                    con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({sql_path(path)})')
                con.execute(f"COPY ({sql}) TO {sql_path(out)} (FORMAT parquet)")
                query.rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(out)})").fetchall()[0][0]
        except Exception as error:  # the service reports failures as a FAILED query with a message
            query.error = str(error).splitlines()[0][:500]
            query.move("FAILED")
        else:
            query.result_path = out
            query.move("SUCCESS")
        query.duration_ms = int((time.monotonic() - started) * 1000)
        return query
