"""The README's "try aws mode without an AWS account" command: the demo data through the deployed stack on the
stand-ins, to audiences on the Meta sandbox, every step succeeding."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from audience_assets.core.config import load_config
from audience_assets.try_aws import try_aws

pytestmark = pytest.mark.slow


def test_the_demo_runs_in_aws_mode_on_the_stand_ins(tmp_path: Path):
    out = io.StringIO()
    assert try_aws(tmp_path, out), out.getvalue()  # the demo size: every audience above its privacy floor
    text = out.getvalue()
    config = load_config()
    assert f"protected queries through the Clean Rooms API: {2 * len(config.partners)}" in text
    sizes = {name: int(size) for name, size in re.findall(r"Meta audience '(.+)': (\d+) members", text)}
    assert set(sizes) == {spec.meta_name for spec in config.audiences.values()} and all(sizes.values())
    assert text.count("delivered s3://") == 4
