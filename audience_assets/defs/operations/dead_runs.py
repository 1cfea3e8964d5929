"""Runs that cannot finish because their process is gone: failed on the record, so nobody waits on them.

A headless run (`python -m audience_assets run`) executes its runs in its own process and tags each with
`audience_assets/runner` (the process's identity, `core.processes`). A run still unfinished whose runner
process provably no longer runs (killed, the machine rebooted) can never finish; the next headless run
reports it failed, which `dead_letter_sensor` then records and alerts on like any failure. Runs launched by
`dagster dev` or the daemon are watched by Dagster's run monitoring (the shipped `dagster.yaml`).
"""

from __future__ import annotations

import dagster as dg

from audience_assets.core import processes

RUNNER_TAG = "audience_assets/runner"


def runner_tag() -> dict[str, str]:
    """The tag naming this process as the run's executor."""
    return {RUNNER_TAG: processes.identity()}


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Report failed every unfinished run whose runner process is gone; returns their ids."""
    unfinished = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING]
        )
    )
    failed = []
    for record in unfinished:
        run = record.dagster_run
        runner = run.tags.get(RUNNER_TAG)
        if runner and processes.gone(runner):
            instance.report_run_failed(
                run,
                f"the process that ran it ({runner}) no longer runs (killed or restarted); marked failed by the "
                "next headless run",
            )
            failed.append(run.run_id)
    return failed
