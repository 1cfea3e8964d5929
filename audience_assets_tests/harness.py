"""`dagster dev` as a test fixture: started headless on a free loopback port, stopped with its whole group.

Started from a non-interactive shell, `dagster dev` ignores SIGINT and SIGTERM (dagster/_cli/dev.py maps SIGTERM
onto SIGINT's handler),
so the child resets both to their defaults, runs in its own session, and is stopped with SIGINT to the
process group, then SIGKILL if it lingers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from audience_assets_tests.conftest import REPO, clean_env, make_dagster_home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def dagster_dev(root: Path, **env: str) -> Iterator[str]:
    """Run `dagster dev` with its home, data dir and log under `root`; yield its base URL. Its daemons loop every
    2 s instead of 30 (`fast_daemon/sitecustomize.py`), so backfills and automation answer within seconds."""
    port = free_port()
    home = make_dagster_home(root / "dagster_home")
    log = (root / "dagster_dev.log").open("w")
    fast = str(Path(__file__).parent / "fast_daemon")
    path = os.pathsep.join(p for p in (fast, os.environ.get("PYTHONPATH", "")) if p)
    environment = clean_env(DAGSTER_HOME=str(home), AUDIENCE_DATA_DIR=str(root / "data"), PYTHONPATH=path, **env)
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {process.returncode}; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster dev did not answer on {url} within 120 s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise AssertionError(body["errors"])
    return body["data"]
