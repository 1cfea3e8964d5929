"""An upload process killed mid-way (SIGKILL, in a subprocess) resumes from the ledger to the exact set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audience_assets.core.meta.delivery import deliver
from audience_assets.core.settings import SANDBOX_AD_ACCOUNT
from audience_assets.core.store import LocalStore
from audience_assets.standins.graph_sandbox import GraphSandbox
from audience_assets_tests.conftest import REPO
from audience_assets_tests.core.meta.test_uploads import AUDIENCE, batch_resends, client_for
from audience_assets_tests.core.meta.uploads import expected_members, plan, spec


@pytest.mark.parametrize("mode", ["replace", "mirror"])
def test_a_killed_upload_resumes_to_the_exact_set(tmp_path: Path, mode: str):
    """The upload process gets SIGKILL after some batches are acknowledged; the rerun finishes the same
    plan from the ledger: the exact set, no acknowledged batch sent again."""
    sandbox = GraphSandbox(tmp_path / "graph.sqlite")
    data = tmp_path / "data"
    storage = LocalStore(str(data))
    ids = range(100_000)
    audience_spec = spec(mode, chunk_rows=1_000)
    upload = plan(storage, AUDIENCE, audience_spec, ids)

    def acks() -> list[Path]:  # under the Meta audience's id, which the worker binds
        return list((data / "meta" / AUDIENCE).glob(f"*/uploads/{upload.upload_id}/batches/*.json"))

    with sandbox.serve() as server:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "audience_assets_tests.core.meta.upload_worker",
                str(data),
                AUDIENCE,
                mode,
                server.url,
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        deadline = time.monotonic() + 60
        while len(acks()) < 20:
            assert worker.poll() is None, "the upload finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        done_before = len(acks())
        assert 20 <= done_before < 100
        audience_id = sandbox.audience_id(audience_spec.meta_name)
        assert len(sandbox.member_keys(audience_id)) < len(ids)

        client = client_for(server.url)
        delivery = deliver(storage, AUDIENCE, audience_spec, upload, client, ad_account_id=SANDBOX_AD_ACCOUNT)
        client.close()
        assert delivery.audience_id == audience_id
        assert sandbox.member_keys(audience_id) == expected_members(ids)
        assert sum(op.batches_resumed for op in delivery.result.operations) >= done_before
    if mode == "replace":
        assert sandbox.resent_replace_batches() == 0
    else:  # only batches in flight at the kill (not yet acknowledged) may arrive twice
        assert batch_resends(tmp_path / "graph.sqlite", "add") <= 2
    sandbox.close()
