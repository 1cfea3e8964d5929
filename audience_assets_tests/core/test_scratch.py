"""Scratch space: one private root (0700); what a killed process staged there is removed by the next sweep,
what a running process uses is left alone, and the figures say what was found."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from audience_assets.core import scratch


@pytest.fixture
def scratch_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "scratch"
    monkeypatch.setenv("AUDIENCE_SCRATCH_DIR", str(root))
    return root


def killed_while_staging(root: Path) -> Path:
    """A process that stages a 'plaintext' file in its scratch folder and is killed with SIGKILL."""
    code = textwrap.dedent(
        """
        import os, sys, time
        from audience_assets.core.scratch import scratch
        with scratch("step") as folder:
            (folder / "staged.parquet").write_bytes(b"anna@example.com" * 1000)
            print(folder, flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AUDIENCE_SCRATCH_DIR": str(root)},
    )
    folder = Path(process.stdout.readline().strip())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return folder


def test_the_root_is_private_and_a_killed_process_leftovers_are_swept(scratch_root: Path):
    left = killed_while_staging(scratch_root)
    assert left.exists() and left.parent == scratch_root
    assert stat.S_IMODE(scratch_root.stat().st_mode) == 0o700
    with scratch.scratch("mine") as mine:
        (mine / "x").write_bytes(b"1234")
        swept = scratch.sweep()
        assert not left.exists() and mine.exists(), "the dead process's folder goes, the running one's stays"
        assert (swept.removed, swept.removed_bytes) == (1, 16_000)
        assert (swept.remaining, swept.remaining_bytes) == (1, 4)
        assert swept.metadata()["scratch/swept_folders"] == 1
    assert list(scratch_root.iterdir()) == []


def test_a_root_owned_by_a_link_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("AUDIENCE_SCRATCH_DIR", str(tmp_path / "link"))
    with pytest.raises(PermissionError, match="owned by this user"):
        scratch.root()
