"""Normalize + hash throughput for a 6-key schema (EMAIL, PHONE, FN, LN, ZIP, COUNTRY).

Measured in one run, each in its own process (so peak memory is its own), in two modes:
  compute     the cells streamed into a checksum: the cost of normalizing and hashing itself
  end-to-end  Parquet in, Parquet of cells out (adds writing six columns of 64-character digests)
for
  engine    audience_assets.core.identity.sql (the production path), at every --rows size
  raw       DuckDB's bare sha256() of the same six columns: 6 values per row (the engine's limit)
  sdk       facebook-business `CustomAudience.format_params(schema, rows, is_raw=True)` on the first
            --sdk-rows rows (install it in the bench environment only: pip install facebook-business)

Rows are generated messy with realistic cardinalities: unique emails and phones (mixed case, padding,
national and international notation), names from ~3,400, ZIPs from ~40,000 (some ZIP+4), ~30 country
spellings. The file is PLAIN-encoded, like rows loaded from CSV, so no reader sees repeated values as a
dictionary: the engine's savings on repeated values are its own. Prints rows/s, ratios and peak RSS.

    python bench/normalize_hash.py                    # 1M and 5M rows, SDK on 1M
    python bench/normalize_hash.py --rows 200000 --sdk-rows 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

SCHEMA = ["EMAIL", "PHONE", "FN", "LN", "ZIP", "COUNTRY"]
SYLLABLES = ["jo", "sé", "ma", "rie", "zo", "ë", "an", "na", "lu", "kas", "chlo", "é", "ni", "ko", "bjö"]
COUNTRIES = [
    "US",
    "us",
    "USA",
    "United States",
    "U.S.A.",
    "United States of America",
    "GB",
    "United Kingdom",
    "UK",
    "gbr",
    "DE",
    "Germany",
    "Deutschland",
    "FR",
    "France",
    "CA",
    "Canada",
    "MX",
    "Mexico",
    "BR",
    "Brazil",
    "ES",
    "Spain",
    "IT",
    "Italy",
    "NL",
    "Netherlands",
    "IE",
    "Ireland",
    "",
]


def generate(path: Path, rows: int) -> None:
    """Messy rows written by DuckDB (fast, deterministic)."""
    names = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES]  # 3,375 names
    con = duckdb.connect()
    try:
        con.execute(
            "CREATE TABLE names AS SELECT unnest(?) AS name, generate_subscripts(?, 1) - 1 AS i", [names, names]
        )
        con.execute(
            "CREATE TABLE countries AS SELECT unnest(?) AS c, generate_subscripts(?, 1) - 1 AS i",
            [COUNTRIES, COUNTRIES],
        )
        n_names, n_countries = len(names), len(COUNTRIES)
        con.execute(f"""
        COPY (
          SELECT
            CASE r % 4 WHEN 0 THEN upper(e) WHEN 1 THEN '  ' || e || ' ' WHEN 2 THEN upper(e[1]) || e[2:] ELSE e
            END AS email,
            CASE r % 5
              WHEN 0 THEN '+1 (' || p[1:3] || ') ' || p[4:6] || '-' || p[7:10]
              WHEN 1 THEN '(' || p[1:3] || ') ' || p[4:6] || '-' || p[7:10]
              WHEN 2 THEN p[1:3] || '.' || p[4:6] || '.' || p[7:10]
              WHEN 3 THEN '1-' || p[1:3] || '-' || p[4:6] || '-' || p[7:10]
              ELSE '+44 20 ' || p[3:6] || ' ' || p[7:10] END AS phone,
            CASE r % 3 WHEN 0 THEN upper(f.name) WHEN 1 THEN upper(f.name[1]) || f.name[2:] ELSE ' ' || f.name END
            AS first_name,
            upper(l.name[1]) || l.name[2:] || CASE r % 7 WHEN 0 THEN '-Smith' WHEN 1 THEN '''s' ELSE '' END AS
            last_name,
            lpad(CAST(z AS VARCHAR), 5, '0') || CASE z % 6 WHEN 0 THEN '-' || lpad(CAST(z % 9999 AS VARCHAR), 4,
            '0') ELSE '' END AS zip,
            c.c AS country
          FROM (
            SELECT range AS r,
                   'user.' || range || '@' || ['gmail.com', 'Example.ORG', 'mail.de', 'outlook.com'][range % 4 + 1]
                   AS e,
                   CAST(2012000000 + range * 7 AS VARCHAR) AS p,
                   hash(range, 'z') % 40000 AS z,
                   hash(range, 'f') % {n_names} AS fi, hash(range, 'l') % {n_names} AS li,
                   hash(range, 'c') % {n_countries} AS ci
            FROM range({rows})
          ) g
          JOIN names f ON f.i = g.fi JOIN names l ON l.i = g.li JOIN countries c ON c.i = g.ci
        ) TO '{path}' (FORMAT parquet, STRING_DICTIONARY_PAGE_SIZE_LIMIT 1)""")
        # PLAIN-encoded, like rows loaded from CSV: no reader hands anyone a dictionary of repeated values
        encodings = {e for (e,) in con.execute(f"SELECT encodings FROM parquet_metadata('{path}')").fetchall()}
        assert encodings == {"PLAIN"}, encodings
    finally:
        con.close()


def _run(path: Path, out: Path, build_select, mode: str) -> dict:
    """The query `build_select(con, source)` gives, run over the file: into a checksum (compute only) or
    into a Parquet file (end to end). The clock includes building it (the engine's dictionaries)."""
    from audience_assets.core.duck import connect
    from audience_assets.core.identity import sql as idsql

    with connect() as con:
        idsql.install(con)
        source = f"read_parquet('{path}')"
        rows = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
        # DuckDB's partial-aggregate pushdown mangles the checksum sink over the engine's query (3x slower);
        # no pipeline query aggregates there, so it is off for both sides.
        con.execute("SET disabled_optimizers = 'partial_aggregate_pushdown'")
        started = time.perf_counter()
        query = build_select(con, source)
        if mode == "compute":
            con.execute(f"SELECT bit_xor(hash(COLUMNS(*))) FROM ({query})").fetchall()
        else:
            con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)")
        return {"rows": rows, "seconds": time.perf_counter() - started}


def measure_engine(path: Path, out: Path, mode: str) -> dict:
    from audience_assets.core.identity import sql as idsql

    cells = ", ".join(f'"{k}"' for k in SCHEMA)
    return _run(
        path,
        out,
        lambda con, source: (
            f"SELECT {cells} FROM ({idsql.meta_cells_query(con, source, keys=SCHEMA, default_country='US')})"
        ),
        mode,
    )


def measure_raw(path: Path, out: Path, mode: str) -> dict:
    columns = ["email", "phone", "first_name", "last_name", "zip", "country"]
    return _run(
        path,
        out,
        lambda con, source: "SELECT " + ", ".join(f"sha256({c}) AS {c}" for c in columns) + f" FROM {source}",
        mode,
    )


def measure_sdk(path: Path, rows: int) -> dict:
    from facebook_business.adobjects.customaudience import CustomAudience

    con = duckdb.connect()
    data = [
        list(r)
        for r in con.execute(
            f"SELECT email, phone, first_name, last_name, zip, country FROM read_parquet('{path}') LIMIT {rows}"
        ).fetchall()
    ]
    con.close()
    started = time.perf_counter()
    for i in range(0, len(data), 10_000):  # as an uploader would call it: one request's worth at a time
        CustomAudience.format_params(SCHEMA, data[i : i + 10_000], is_raw=True)
    return {"rows": len(data), "seconds": time.perf_counter() - started}


def child(kind: str, path: str, mode: str, rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.parquet"
        result = {
            "engine": lambda: measure_engine(Path(path), out, mode),
            "raw": lambda: measure_raw(Path(path), out, mode),
            "sdk": lambda: measure_sdk(Path(path), rows),
        }[kind]()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(kind: str, path: Path, mode: str = "-", rows: int = 0) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path), mode, str(rows)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--sdk-rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return
    print(f"normalize + hash, schema {','.join(SCHEMA)}; duckdb {duckdb.__version__}; threads: DuckDB default")
    with tempfile.TemporaryDirectory(prefix="aa-bench-") as tmp:
        sdk, rows_of = None, {}
        for rows in args.rows:
            path = Path(tmp) / f"rows-{rows}.parquet"
            generate(path, rows)
            rows_of[rows] = {
                mode: (run_child("engine", path, mode), run_child("raw", path, mode))
                for mode in ("compute", "end-to-end")
            }
            if sdk is None and args.sdk_rows:
                try:
                    sdk = run_child("sdk", path, rows=min(rows, args.sdk_rows))
                except RuntimeError as error:
                    print(f"SDK not measured ({str(error).strip().splitlines()[-1]}); pip install facebook-business")
            path.unlink()
        sdk_rate = sdk["rows"] / sdk["seconds"] if sdk else None
        if sdk:
            print(
                f"SDK CustomAudience.format_params: {sdk['rows']:,} rows, {sdk_rate:,.0f} rows/s, "
                f"peak RSS {sdk['peak_rss_mb']:,.0f} MB"
            )
        print(
            f"\n{'mode':<11} {'rows':>10} {'engine rows/s':>14} {'raw sha256 rows/s':>18} {'engine/raw':>10} "
            f"{'engine/SDK':>10} {'engine RSS MB':>13} {'raw RSS MB':>10}"
        )
        for mode in ("compute", "end-to-end"):
            for rows, by_mode in rows_of.items():
                engine, raw = by_mode[mode]
                e_rate, r_rate = rows / engine["seconds"], rows / raw["seconds"]
                versus_sdk = f"{e_rate / sdk_rate:9.1f}x" if sdk_rate else "      n/a"
                print(
                    f"{mode:<11} {rows:>10,} {e_rate:>14,.0f} {r_rate:>18,.0f} {e_rate / r_rate:>9.0%} "
                    f"{versus_sdk:>10} {engine['peak_rss_mb']:>13,.0f} {raw['peak_rss_mb']:>10,.0f}"
                )


if __name__ == "__main__":
    main()
