"""Runs that cannot finish because their process is gone: failed on the record, so nobody waits on them.

A headless run (`python -m audience_assets run`) executes its runs in its own process and tags each with
`audience_assets/runner` = host, process id and the process's start time. A run still STARTED whose runner
process no longer runs on this host (killed, the machine rebooted) can never finish; the next headless run
reports it failed, which `dead_letter_sensor` then records and alerts on like any failure. Runs launched by
`dagster dev` or the daemon are watched by Dagster's run monitoring (the shipped `dagster.yaml`).
"""

from __future__ import annotations

import os
import socket

import dagster as dg

RUNNER_TAG = "audience_assets/runner"


def runner_tag() -> dict[str, str]:
    """The tag naming this process as the run's executor."""
    return {RUNNER_TAG: f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid()) or 0:.0f}"}


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Report failed every unfinished run whose runner process on this host is gone; returns their ids."""
    unfinished = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING]
        )
    )
    failed = []
    for record in unfinished:
        run = record.dagster_run
        tag = run.tags.get(RUNNER_TAG)
        if not tag:
            continue
        host, pid, started = tag.rsplit(":", 2)
        if host != socket.gethostname() or _runs(int(pid), float(started)):
            continue
        instance.report_run_failed(
            run,
            f"the process that ran it ({host}, pid {pid}) no longer runs (killed or restarted); "
            "marked failed by the next headless run",
        )
        failed.append(run.run_id)
    return failed


def _runs(pid: int, started: float) -> bool:
    """Whether process `pid`, started at `started` (so not a later process reusing the id), still runs."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    actual = _process_start(pid)
    return actual is None or abs(actual - started) < 2


def _process_start(pid: int) -> float | None:
    """The process's start time (Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat, open("/proc/stat") as system:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            boot = next(float(line.split()[1]) for line in system if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
