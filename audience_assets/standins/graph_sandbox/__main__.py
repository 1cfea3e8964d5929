"""`python -m audience_assets.standins.graph_sandbox`: the sandbox on a loopback port (see `main`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from audience_assets.standins.graph_sandbox.config import SandboxConfig
from audience_assets.standins.graph_sandbox.faults import Faults
from audience_assets.standins.graph_sandbox.server import GraphSandbox


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m audience_assets.standins.graph_sandbox --state graph.sqlite --faults throttle:0.15,5xx:0.05,regain0`:
    the sandbox as a Graph API on a loopback port (printed on the first line), for live-mode tests and
    benchmarks: point META_GRAPH_URL at it and set META_ACCESS_TOKEN to `--token`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m audience_assets.standins.graph_sandbox", description=main.__doc__)
    parser.add_argument("--state", default=None, help="SQLite state file (default: in memory)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="sandbox-token")
    parser.add_argument("--account", default="act_1000000001")
    parser.add_argument("--faults", default="", help=Faults.PROFILE_HELP)
    parser.add_argument("--rate-limit", type=int, default=None, help="calls per window per ad account")
    parser.add_argument("--window", type=float, default=3600.0, help="seconds of the rate window")
    args = parser.parse_args(argv)
    config = SandboxConfig(
        tokens={args.token: ["*"]},
        ad_accounts={args.account: {"name": "Sandbox ad account", "tos_accepted": True}},
        faults=Faults.parse(args.faults, name="--faults"),
        rate_limit_calls=args.rate_limit,
        rate_limit_window_seconds=args.window,
    )
    server = GraphSandbox(args.state, config).serve(port=args.port)
    print(server.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
