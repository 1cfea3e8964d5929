"""The command line refuses what it cannot mean: an audience or source name that the configuration does not
declare (a typo) is an error naming what is declared, before anything runs, for `run` as for `plan`."""

from __future__ import annotations

from pathlib import Path

import pytest

from audience_assets.cli import main
from audience_assets_tests.conftest import LEAKY


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--approve-removals", "travel-enthusiasts"], "unknown audience(s) travel-enthusiasts"),
        (["run", "--approve-removals", "travel_enthusiast@3f2a"], "unknown audience(s) travel_enthusiast;"),
        (["run", "--approve-upload", "new_parents", "--approve-upload", "gamers"], "unknown audience(s) gamers;"),
        (["run", "--accept-delivery", "crm"], "unknown source(s) crm; the configuration declares acme_data"),
        (["plan", "--accept-delivery", "first-party"], "unknown source(s) first-party"),
    ],
)
def test_a_name_the_configuration_does_not_declare_stops_the_command(argv, words, tmp_path: Path, monkeypatch, capsys):
    for name in LEAKY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUDIENCE_DATA_DIR", str(tmp_path / "data"))
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "data").exists(), "nothing ran: not even the demo data was seeded"


def test_approvals_naming_declared_audiences_pass_the_check():
    from audience_assets.core.config import load_config
    from audience_assets.headless import unknown_names

    config = load_config()
    assert unknown_names(config, audiences=["travel_enthusiasts@3f2a", "new_parents"], sources=["first_party"]) is None


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_brings_back_dagsters_event_stream(verbose: bool, tmp_path: Path, capfd):
    """One step run as the CLI runs it: quiet, the step's own lines only; verbose, Dagster's DEBUG events too."""
    import io

    import dagster as dg

    from audience_assets.core.settings import Settings
    from audience_assets.headless import run_pipeline

    settings = Settings(data_dir=tmp_path / "data", demo_data=False)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_pipeline(
            settings, instance, io.StringIO(), stages=((["landing_zone_report"], None),), verbose=verbose
        )
    logged = capfd.readouterr().err
    assert (" - DEBUG - " in logged) == verbose and ("STEP_OUTPUT" in logged) == verbose
