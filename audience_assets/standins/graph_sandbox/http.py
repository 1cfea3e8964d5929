"""The sandbox over real HTTP on a loopback port (a thread of this process), and the command that serves it."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from audience_assets.standins.graph_sandbox.faults import Faults

if TYPE_CHECKING:
    from audience_assets.standins.graph_sandbox.server import GraphSandbox


class SandboxServer:
    """The sandbox on a real loopback HTTP port; use as a context manager or call `stop()`."""

    def __init__(self, sandbox: GraphSandbox, host: str = "127.0.0.1", port: int = 0):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandbox only listens on loopback")
        outer = sandbox

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each keep-alive request waits ~40 ms on delayed ACKs

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                response = outer.handle(self.command, self.path, dict(self.headers.items()), body)
                if response.reset:  # close with RST (linger 0), as a proxy or a load balancer may
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if response.drop:
                    time.sleep(outer.config.faults.delay_seconds)
                    self.close_connection = True
                    return
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:  # requests carry tokens in headers only, but stay quiet
                pass

        self.sandbox = sandbox
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="meta-sandbox", daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


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
    from audience_assets.standins.graph_sandbox.config import SandboxConfig
    from audience_assets.standins.graph_sandbox.server import GraphSandbox

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
