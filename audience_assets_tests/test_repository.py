"""The README's promises: exactly two setup commands, and CI runs the same test command."""

from __future__ import annotations

import re

from audience_assets_tests.conftest import REPO


def fenced_commands(section: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_gives_two_commands_and_ci_runs_the_test_command():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    ui, tests = fenced_commands(section)
    assert "dagster dev" in ui and "pip install" in ui
    assert "pytest" in tests and "pip install" in tests
    assert tests in (REPO / ".ci" / "run").read_text()


def test_dagster_family_is_pinned_together():
    pyproject = (REPO / "pyproject.toml").read_text()
    for pin in ('"dagster==1.13.27"', '"dagster-webserver==1.13.27"', '"dagster-aws==0.29.27"'):
        assert pin in pyproject
