"""DuckDB connections for bulk work: bounded memory, spill to a temporary directory, no extensions.

DuckDB is the compute engine here, never storage: every connection is in-memory, reads local
Parquet/CSV files and writes local files that the storage resource then moves. Use `fetchall()` on
every result before the next query (DuckDB 2.0 refuses a new query while one is pending).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb

from audience_assets.core.scratch import scratch
from audience_assets.core.settings import duckdb_limits

# 1.5 GB: a 10M-row partner's join and per-identity aggregate fit without spilling (at 1 GB they spill and
# the 10M-row benchmark takes about 40 s longer), and the pipeline process still peaks under 2 GB (1.72 GB).
DEFAULT_MEMORY_LIMIT = "1.5GB"


# COPY options for a file that is mostly SHA-256 digests (64 hex characters): they do not compress (snappy
# saves under 10% of such a file) yet compressing costs a fifth of the time to write it, and reading it back
# costs the decompression. Other files (raw rows, segments, ids) keep Parquet's default compression.
DIGEST_PARQUET = "FORMAT parquet, COMPRESSION uncompressed"


def sql_path(path: Path | str) -> str:
    """A file path as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


@contextlib.contextmanager
def connect(
    work_dir: Path | None = None, *, memory_limit: str | None = None, threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection limited to `memory_limit` (env `AUDIENCE_DUCKDB_MEMORY_LIMIT`,
    default 1.5GB) that spills to `work_dir`, with automatic extension loading switched off."""
    configured_memory, configured_threads = duckdb_limits()
    limit = memory_limit or configured_memory or DEFAULT_MEMORY_LIMIT
    with contextlib.ExitStack() as stack:
        spill = work_dir or stack.enter_context(scratch("duckdb"))
        config = {
            "memory_limit": limit,
            "temp_directory": str(spill),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "preserve_insertion_order": False,
        }
        if threads or configured_threads:
            config["threads"] = threads or configured_threads
        con = duckdb.connect(config=config)
        try:
            yield con
        finally:
            con.close()


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A column or table name as a SQL identifier (double-quoted, quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def parquet_columns(con: duckdb.DuckDBPyConnection, path: Path | str) -> list[str]:
    """The column names of a Parquet file, in order (read from its footer, no rows scanned)."""
    return [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(path)})").fetchall()]
