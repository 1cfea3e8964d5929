"""The whole local pipeline, headless, on N generated rows: per-stage time, rows/s, peak RSS, linearity.

For each size N (1M, 2M, 4M by default; add 10M with --ten-million), in one run:
  1. DuckDB writes a landing zone for the shipped configuration: an N-row CRM export (CSV, messy like
     the demo), N partner rows split between acme_data (CSV, 55%) and beta_insights (Parquet with
     pre-hashed emails, 45%), 70% of them people the CRM knows, and N/150 opt-outs.
  2. The Graph API sandbox is served from its own process on 127.0.0.1 (unlimited rate budget).
  3. `python -m audience_assets run`'s pipeline (`cli.run_pipeline`) runs in a child process against it,
     with the configured DuckDB memory limit and a temporary directory for spills.
Printed and appended to bench/results.md: seconds per stage (summed over the stage's partitions), rows/s,
the child's peak RSS, each size's time relative to the first size scaled by rows (1.00 = linear), the seconds
per million rows a size adds to the previous one (equal steps = linear), and the time of a fixed reference
workload measured just before each size (the machine's speed of the moment).

    python bench/pipeline.py                 # 1M, 2M, 4M
    python bench/pipeline.py --ten-million   # 1M, 2M, 4M, 10M
    python bench/pipeline.py --rows 200000   # any sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from audience_assets.core.duck import DEFAULT_MEMORY_LIMIT

RESULTS = Path(__file__).with_name("results.md")
FIRST = [
    "Mary",
    "John",
    "José",
    "Zoë",
    "Renée",
    "François",
    "Søren",
    "Björn",
    "Chloé",
    "Ana",
    "Liam",
    "Olivia",
    "Noah",
    "Emma",
    "Mateo",
    "Sofía",
    "Lukas",
    "Léa",
    "Hiroshi",
    "Aoife",
    "Siobhán",
    "Mohammed",
    "Fatima",
]
LAST = [
    "Smith",
    "O'Brien",
    "García",
    "Müller",
    "Smith-Jones",
    "Nguyễn",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Martínez",
    "Hernández",
    "López",
    "Schröder",
    "Dubois",
    "Lefèvre",
    "Rossi",
    "Kowalski",
    "Novák",
    "Tanaka",
]
PLACES = [
    ("San Francisco", "CA", "941"),
    ("Los Angeles", "California", "900"),
    ("New York", "NY", "100"),
    ("Boston", "Massachusetts", "021"),
    ("Chicago", "IL", "606"),
    ("Austin", "Texas", "787"),
    ("Seattle", "WA", "981"),
    ("Denver", "Colorado", "802"),
    ("Miami", "FL", "331"),
    ("Atlanta", "GA", "303"),
]
COUNTRIES = ["US", "USA", "United States", "us", ""]
INTERESTS = ["travel", "outdoors", "cooking", "gaming", "fitness", "fashion", "music"]
AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
SEGMENTS = ["frequent_flyer", "new_parent", "pet_owner", "home_mover", "luxury_shopper"]
PROPENSITY = ["high", "medium", "low"]


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _pick(values: list[str], seed: str) -> str:
    """SQL: a deterministic choice from `values` for the row `i`."""
    return f"[{', '.join(map(_lit, values))}][CAST(hash(i, '{seed}') % {len(values)} AS BIGINT) + 1]"


def _person_sql(n_customers: int) -> str:
    """SQL over a column `i` (the person): their clean identity. i < n_customers are CRM customers."""
    return f"""
      'user.' || i || '@' || {_pick(["gmail.com", "yahoo.com", "example.org", "mail.de"], "d")} AS email,
      CAST(2010000000 + i * 3 AS VARCHAR) AS phone,
      {_pick(FIRST, "f")} AS first_name, {_pick(LAST, "l")} AS last_name,
      CAST(hash(i, 'p') % {len(PLACES)} AS BIGINT) AS place"""


def _messy(column: str, seed: str) -> str:
    """SQL: the clean `email`/`phone` column written the many ways real files write it."""
    if column == "email":
        return (
            f"CASE hash(i, '{seed}') % 5 WHEN 0 THEN upper(email) WHEN 1 THEN '  ' || email || ' ' "
            f"WHEN 2 THEN email || '.' ELSE email END"
        )
    return (
        f"CASE hash(i, '{seed}') % 5 WHEN 0 THEN '(' || phone[1:3] || ') ' || phone[4:6] || '-' || phone[7:10] "
        f"WHEN 1 THEN '+1 ' || phone[1:3] || ' ' || phone[4:6] || ' ' || phone[7:10] "
        f"WHEN 2 THEN phone[1:3] || '.' || phone[4:6] || '.' || phone[7:10] ELSE phone END"
    )


def generate(data_dir: Path, n: int) -> dict[str, int]:
    """Write the landing zone for N rows; return the rows written per file."""
    landing = data_dir / "landing"
    for folder in ("first_party", "partners/acme_data", "partners/beta_insights", "suppression"):
        (landing / folder).mkdir(parents=True, exist_ok=True)
    places = "[" + ", ".join(f"{{'city': {_lit(c)}, 'state': {_lit(s)}, 'zip': {_lit(z)}}}" for c, s, z in PLACES) + "]"
    acme, beta = int(n * 0.55), n - int(n * 0.55)
    con = duckdb.connect(config={"preserve_insertion_order": False})
    try:
        people = f"(SELECT i, {_person_sql(n)} FROM (SELECT range AS i FROM range(?)))"
        con.execute(
            f"""COPY (
            SELECT 'C' || lpad(CAST(i AS VARCHAR), 9, '0') AS customer_id, {_messy("email", "e")} AS email,
                   {_messy("phone", "q")} AS phone, first_name, last_name,
                   {places}[place + 1].city AS city, {places}[place + 1].state AS state,
                   {places}[place + 1].zip || lpad(CAST(hash(i, 'z') % 100 AS VARCHAR), 2, '0') AS zip,
                   {_pick(COUNTRIES, "c")} AS country,
                   CAST(1950 + hash(i, 'y') % 55 AS VARCHAR) || '-' || lpad(CAST(1 + hash(i, 'm') % 12 AS VARCHAR),
                   2, '0')
                     || '-' || lpad(CAST(1 + hash(i, 'dd') % 28 AS VARCHAR), 2, '0') AS dob,
                   {_pick(["m", "F", "Female", "male", ""], "g")} AS gender,
                   CASE WHEN hash(i, 'v') % 12 = 0 THEN '' ELSE CAST(round((hash(i, 'lv') % 100000) / 100.0, 2)
                   AS VARCHAR) END AS ltv_usd
            FROM {people}) TO '{landing}/first_party/crm_export.csv' (HEADER, DELIMITER ',')""",
            [n],
        )
        # Partner rows: 70% people the CRM knows (a spread of customer numbers), 30% strangers (i >= n).
        known = f"CASE WHEN hash(r, 'k') % 10 < 7 THEN hash(r, 'w') % {n} ELSE {n} + r END"
        partner_people = (
            f"(SELECT i, {_person_sql(n)} FROM (SELECT {known} AS i FROM (SELECT range AS r FROM range(?))))"
        )
        con.execute(
            f"""COPY (
            SELECT {_messy("email", "ae")} AS "Email Address", {_messy("phone", "aq")} AS "Mobile Number",
                   upper(first_name) AS "First", last_name AS "Last",
                   {places}[place + 1].zip || lpad(CAST(hash(i, 'z') % 100 AS VARCHAR), 2, '0') AS "Zip",
                   {_pick(INTERESTS, "in")} AS "Interest", {_pick(AGE_BANDS, "ab")} AS "Age Band"
            FROM {partner_people}) TO '{landing}/partners/acme_data/acme.csv' (HEADER, DELIMITER ';')""",
            [acme],
        )
        con.execute(
            f"""COPY (
            SELECT CASE WHEN hash(i, 'bh') % 10 < 9 THEN sha256(email) ELSE '' END AS email_sha256,
                   CASE WHEN hash(i, 'bp') % 10 < 6 THEN {_messy("phone", "bq")} ELSE '' END AS phone_number,
                   {_pick(["US", "USA", "United States"], "bc")} AS country_code,
                   {_pick(SEGMENTS, "sg")} AS segment, {_pick(PROPENSITY, "pr")} AS propensity
            FROM {partner_people}) TO '{landing}/partners/beta_insights/beta.parquet' (FORMAT parquet)""",
            [beta],
        )
        optouts = max(1, n // 150)
        con.execute(
            f"""COPY (
            SELECT {_messy("email", "oe")} AS email, '' AS phone, 'US' AS country
            FROM (SELECT i, {_person_sql(n)} FROM (SELECT hash(range, 'o') % {n} AS i FROM range(?))))
            TO '{landing}/suppression/optouts.csv' (HEADER, DELIMITER ',')""",
            [optouts],
        )
    finally:
        con.close()
    return {"first_party": n, "acme_data": acme, "beta_insights": beta, "suppression": optouts}


SANDBOX = """
import sys, time
from audience_assets.standins.graph_sandbox import GraphSandbox
server = GraphSandbox(sys.argv[1]).serve()
print(server.url, flush=True)
time.sleep(10 ** 6)
"""

CHILD = """
import json, resource, sys, time, io
from collections import defaultdict
import dagster as dg
from audience_assets.headless import run_pipeline
from audience_assets.core.settings import Settings
with dg.DagsterInstance.ephemeral() as instance:
    started = time.perf_counter()
    out = io.StringIO()
    ok = run_pipeline(Settings.from_env(), instance, out=out)
    total = time.perf_counter() - started
    stages, rows = defaultdict(float), defaultdict(int)
    for record in instance.get_run_records():
        starts = {}
        for entry in instance.all_logs(record.dagster_run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type_value == "STEP_START":
                starts[event.step_key] = entry.timestamp
            elif event.event_type_value == "STEP_SUCCESS":
                stages[event.step_key] += entry.timestamp - starts[event.step_key]
            elif event.event_type_value == "ASSET_MATERIALIZATION":
                materialization = event.event_specific_data.materialization
                count = materialization.metadata.get("dagster/row_count")
                if count is not None and materialization.asset_key.path[-1] != "audience_holdout":  # members again
                    rows[event.step_key] += count.value
print(json.dumps({"ok": ok, "log": out.getvalue(), "seconds": total, "stages": stages, "rows": rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def reference_seconds() -> float:
    """A fixed amount of CPU work (DuckDB hashing 4M strings on every core, then a Python loop), timed
    just before a size runs. This machine's speed drifts by more than our changes (seen: 1.7x within a
    day), so a run's figures are read beside its own reference, not against another day's."""
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        started = time.perf_counter()
        con.execute("SELECT sum(strlen(sha256('user.' || range || '@example.com'))) FROM range(4000000)").fetchall()
        total = 0
        for i in range(10_000_000):
            total += i
        return time.perf_counter() - started
    finally:
        con.close()


def run_once(n: int, tmp: Path) -> dict:
    data_dir = tmp / f"data-{n}"
    reference = reference_seconds()
    started = time.perf_counter()
    written = generate(data_dir, n)
    generated = time.perf_counter() - started
    sandbox = subprocess.Popen(
        [sys.executable, "-c", SANDBOX, str(tmp / f"sandbox-{n}.sqlite")], stdout=subprocess.PIPE, text=True
    )
    try:
        url = sandbox.stdout.readline().strip()
        env = {
            **os.environ,
            "AUDIENCE_DATA_DIR": str(data_dir),
            "AUDIENCE_DEMO_DATA": "0",
            "META_ACCESS_TOKEN": "sandbox-token",
            "META_GRAPH_URL": url,
            "META_AD_ACCOUNT_ID": "act_1000000001",
            "TMPDIR": str(tmp),
        }
        env.pop("DAGSTER_HOME", None)
        done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
    finally:
        sandbox.kill()
        sandbox.wait()
    if done.returncode != 0:
        raise RuntimeError(f"pipeline at {n:,} rows failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise RuntimeError(f"pipeline at {n:,} rows failed:\n{result['log']}")
    result.update(n=n, written=written, generate_seconds=generated, reference_seconds=reference)
    return result


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GB RAM, Python {platform.python_version()}, "
        f"DuckDB {duckdb.__version__}, DuckDB memory limit "
        f"{os.environ.get('AUDIENCE_DUCKDB_MEMORY_LIMIT', DEFAULT_MEMORY_LIMIT)}"
    )


def report(results: list[dict]) -> str:
    stages = list(dict.fromkeys(s for r in results for s in r["stages"]))
    base = results[0]
    sizes = ", ".join(f"{r['n']:,}" for r in results)
    lines = [
        f"### {date.today().isoformat()}: {sizes} rows",
        "",
        f"Machine: {machine()}.",
        "",
        "Data per size N: N CRM rows (CSV, 11 columns, 14 Meta keys), N partner rows (acme_data CSV 55%, "
        "beta_insights Parquet 45%; 70% people the CRM knows), N/150 opt-outs; the shipped configuration's three "
        "audiences, uploaded to the sandbox on 127.0.0.1.",
        "",
        "| stage | " + " | ".join(f"{r['n']:,} rows: s" for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(f"{r['stages'].get(stage, 0):.1f}" for r in results) + " |")
    lines += [
        "| **whole pipeline** | " + " | ".join(f"**{r['seconds']:.1f}**" for r in results) + " |",
        "| rows/s (CRM + partner rows in) | " + " | ".join(f"{2 * r['n'] / r['seconds']:,.0f}" for r in results) + " |",
        "| time / first size's time, per row (1.00 = linear) | "
        + " | ".join(f"{(r['seconds'] / r['n']) / (base['seconds'] / base['n']):.2f}" for r in results)
        + " |",
        # the cost of the rows a size adds to the one before: equal at every step when cost grows linearly
        # (the ratio above also carries each run's fixed cost, which weighs most on the smallest size)
        "| seconds per million rows added to the previous size | "
        + " | ".join(
            ["–"]
            + [f"{(r['seconds'] - p['seconds']) / ((r['n'] - p['n']) / 1e6):.1f}" for p, r in zip(results, results[1:])]
        )
        + " |",
        "| peak RSS of the pipeline process, MB | " + " | ".join(f"{r['peak_rss_mb']:,.0f}" for r in results) + " |",
        "| reference CPU work just before, s (lower = faster machine) | "
        + " | ".join(f"{r['reference_seconds']:.2f}" for r in results)
        + " |",
        "",
        "Rows per stage (as materialized): "
        + "; ".join(f"{r['n']:,}: " + ", ".join(f"{k} {v:,}" for k, v in r["rows"].items()) for r in results[-1:]),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 2_000_000, 4_000_000])
    parser.add_argument("--ten-million", action="store_true", help="add a 10M-row run")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to bench/results.md")
    args = parser.parse_args()
    sizes = args.rows + ([10_000_000] if args.ten_million else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="aa-bench-pipeline-") as folder:
        for n in sizes:
            work = Path(folder) / str(n)
            work.mkdir()
            result = run_once(n, work)
            print(
                f"{n:>12,} rows: {result['seconds']:7.1f} s, peak RSS {result['peak_rss_mb']:,.0f} MB "
                f"(data generated in {result['generate_seconds']:.1f} s; reference work "
                f"{result['reference_seconds']:.2f} s)",
                flush=True,
            )
            results.append(result)
    text = report(results)
    print("\n" + text)
    if not args.no_record:
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\nAppended by `bench/pipeline.py`; newest last.\n\n")
        with RESULTS.open("a") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
