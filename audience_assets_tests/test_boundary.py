"""The boundary of the core: no module under `audience_assets/core` (nor the stand-ins, nor the stack) imports Dagster.

Each module is imported in a fresh interpreter, so nothing another test loaded can hide an import; the
test fails if `dagster` is then in `sys.modules`. The core holds most of the code: a second test measures
its share of the package's lines.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from audience_assets_tests.conftest import REPO

PACKAGE = REPO / "audience_assets"
DAGSTER_FREE = ("core", "standins", "infra")


def modules(folder: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


@pytest.mark.parametrize("folder", DAGSTER_FREE)
def test_no_core_module_imports_dagster(folder: str):
    names = modules(folder)
    assert len(names) > 1
    probe = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.') "
        "or m.startswith('dagster_'))\n"
        "    assert not loaded, f'{name} loads {loaded[:3]}'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def lines(paths: list[Path]) -> int:
    return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in paths)


def test_the_core_holds_most_of_the_code():
    everything = list(PACKAGE.rglob("*.py"))
    core = [p for p in everything if p.relative_to(PACKAGE).parts[0] in DAGSTER_FREE]
    assert lines(core) / lines(everything) >= 0.8, (lines(core), lines(everything))


def test_the_public_entry_points_keep_their_import_paths():
    """Other code relies on these: the identity API at `audience_assets.identity`, the clean room's rule and
    protected-query API, and the headless command's module."""
    from audience_assets.core.cleanroom.protected_query import Polling, run
    from audience_assets.core.cleanroom.rules import rule_from_policy
    from audience_assets.identity import meta_value, normalize

    assert normalize("EMAIL", "  Mary@Example.COM ") == "mary@example.com"
    assert meta_value("EMAIL", "mary@example.com") == (
        "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"
    )
    assert rule_from_policy({"list": {"joinColumns": ["a"], "listColumns": ["b"]}}, ["a", "b"]).kind == "LIST"
    assert callable(run) and Polling(1, 2, 3).deadline == 3
    assert (REPO / "audience_assets" / "__main__.py").is_file()
