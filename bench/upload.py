"""Upload throughput against the Graph API sandbox with a rate budget, over loopback HTTP.

The sandbox runs in its own process (`python -m audience_assets.standins.graph_sandbox`) with a budget of `--budget`
calls per rolling `--window` seconds: Meta's business-use-case limit, scaled down from an hour, and the
client's waits with it (the longest single wait 900 s -> window / 4, the first back-off 60 s -> window / 60).
In one run, on the same 1M rows (100 chunks of 10,000):
  paced          our client: `--concurrency` batches in flight, paced by the usage headers
  paced, faults  the same against a sandbox that also refuses 15 % of calls with 80003 at call_count 100 and
                 an estimate of 0, and fails 5 % with HTTP 500 (the field report behind issue #18)
  sequential     the same client sending one request at a time, without pacing (what most tools do)
Reported: rows/s against the allowed rate (budget / window x 10,000 rows), the share of the budget's best
possible schedule achieved (`budget` calls at once, then the next `budget` when they leave the window,
and so on), requests, requests refused (80003) and failed (5xx), and the longest single wait against the cap.

    python bench/upload.py                      # 1M rows, budget 20 calls / 10 s
    python bench/upload.py --rows 200000 --budget 10 --window 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from audience_assets.core.audience.plan import load_plan, plan_upload, row_id_sql, store_plan
from audience_assets.core.config import Audience
from audience_assets.core.duck import connect, sql_path
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.delivery import deliver
from audience_assets.core.policies import MetaPolicy
from audience_assets.core.settings import SANDBOX_AD_ACCOUNT, SANDBOX_TOKEN
from audience_assets.core.store import LocalStore

KEYS = ["EMAIL", "PHONE", "EXTERN_ID"]
FAULTS = "throttle:0.15,5xx:0.05,regain0,seed:3"


def prepare(storage: LocalStore, audience: str, rows: int, tmp: Path) -> None:
    """Store an upload plan adding `rows` synthetic members (10,000-row chunks)."""
    with connect(tmp) as con:
        desired = tmp / f"{audience}.parquet"
        con.execute(f"""COPY (SELECT {row_id_sql(KEYS)} AS row_id, * FROM (
              SELECT sha256('user' || range || '@example.com') AS EMAIL, sha256(CAST(15550000000 + range AS
              VARCHAR)) AS PHONE,
                     'c' || range AS EXTERN_ID FROM range({rows}))) TO {sql_path(desired)} (FORMAT parquet)""")
        plan = plan_upload(
            con,
            audience=audience,
            mode="add",
            keys=KEYS,
            desired=desired,
            confirmed=None,
            suppression=None,
            out_dir=tmp / audience,
        )
        store_plan(storage, audience, plan)


def run(
    label: str,
    storage: LocalStore,
    audience: str,
    args: argparse.Namespace,
    tmp: Path,
    *,
    concurrency: int,
    paced: bool,
    faults: str = "",
) -> dict:
    state = tmp / f"{audience}.sqlite"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "audience_assets.standins.graph_sandbox",
            "--state",
            str(state),
            "--token",
            SANDBOX_TOKEN,
            "--account",
            SANDBOX_AD_ACCOUNT,
            "--rate-limit",
            str(args.budget),
            "--window",
            str(args.window),
            "--faults",
            faults,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        cap = args.window / 4  # Meta's hour and the 900 s cap, scaled together
        policy = MetaPolicy(
            usage_window_seconds=args.window,
            pace_from_percent=50 if paced else 101,
            throttle_max_seconds=cap,
            throttle_base_seconds=args.window / 60,
            concurrency=concurrency,
        )
        client = GraphClient(access_token=SANDBOX_TOKEN, base_url=url, policy=policy)
        spec = Audience(meta_name=f"bench {label}", select={"bench": {}}, keys=KEYS, mode="add")
        started = time.perf_counter()
        delivery = deliver(
            storage,
            audience,
            spec,
            load_plan(storage, audience),
            client,
            ad_account_id=SANDBOX_AD_ACCOUNT,
            report=lambda line: None,
        )
        seconds = time.perf_counter() - started
        client.close()
    finally:
        server.kill()
        server.wait()
    requests = client.stats.requests
    best = (requests - 1) // args.budget * args.window  # the budget's fastest schedule: full windows, back to back
    return {
        "label": label,
        "rows": sum(op.rows for op in delivery.result.operations),
        "seconds": seconds,
        "requests": requests,
        "throttled": client.stats.throttled,
        "failed": client.stats.transient_failures,
        "best_seconds": best,
        "waited": client.pacer.waited,
        "longest": client.pacer.longest_wait,
        "cap": cap,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--budget", type=int, default=20, help="calls per window")
    parser.add_argument("--window", type=float, default=10.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    runs = (
        ("paced", dict(concurrency=args.concurrency, paced=True)),
        ("paced_faults", dict(concurrency=args.concurrency, paced=True, faults=FAULTS)),
        ("sequential", dict(concurrency=1, paced=False)),
    )
    with tempfile.TemporaryDirectory(prefix="aa-bench-upload-") as folder:
        tmp = Path(folder)
        storage = LocalStore(str(tmp / "data"))
        for audience, _ in runs:
            prepare(storage, audience, args.rows, tmp)
        results = [run(label, storage, label, args, tmp, **options) for label, options in runs]
    allowed = args.budget / args.window * 10_000
    print(
        f"budget {args.budget} calls / {args.window:g} s rolling = {allowed:,.0f} rows/s for 10,000-row batches; "
        f"{args.rows:,} rows; faults: {FAULTS}"
    )
    print(
        f"{'client':<13} {'rows/s':>9} {'of allowed':>11} {'of best schedule':>17} {'seconds':>8} {'requests':>9} "
        f"{'refused':>8} {'5xx':>5} {'waited s':>9} {'longest wait':>13} {'cap':>5}"
    )
    for r in results:
        print(
            f"{r['label']:<13} {r['rows'] / r['seconds']:>9,.0f} {r['rows'] / r['seconds'] / allowed:>10.0%} "
            f"{r['best_seconds'] / r['seconds']:>16.0%} {r['seconds']:>8.1f} {r['requests']:>9} {r['throttled']:>8} "
            f"{r['failed']:>5} {r['waited']:>9.1f} {r['longest']:>12.2f}s {r['cap']:>4.1f}s"
        )
    paced, faulty, sequential = results
    print(
        f"paced / sequential: {sequential['seconds'] / paced['seconds']:.2f}x the rows/s; "
        f"with faults: {faulty['rows'] / faulty['seconds'] / allowed:.0%} of the allowed rate, "
        f"longest wait {faulty['longest']:.2f} s (cap {faulty['cap']:.1f} s)"
    )


if __name__ == "__main__":
    main()
