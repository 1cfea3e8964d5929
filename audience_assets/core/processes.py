"""Whether a process still runs: what lets the project clean up after a process that was killed.

A process is named by its host, its id and its start time (Linux `/proc`), so a later process that happens to
reuse the id is not mistaken for it. Used for scratch folders (`core.scratch`) and for headless runs left
STARTED by a killed runner (`defs.operations.dead_runs`).
"""

from __future__ import annotations

import os
import socket


def identity() -> str:
    """This process as `host:pid:start time`."""
    return f"{socket.gethostname()}:{os.getpid()}:{started_at(os.getpid()) or 0:.0f}"


def gone(identity_text: str) -> bool:
    """True only when the named process provably no longer runs: it ran on this host and its id is free, or
    now belongs to a process started at another time. Another host's process is never judged."""
    host, pid, started = identity_text.rsplit(":", 2)
    return host == socket.gethostname() and not alive(int(pid), float(started) or None)


def alive(pid: int, started: float | None = None) -> bool:
    """Whether process `pid` runs (and, given `started`, is the one started then)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that id: not ours to judge
        return True
    actual = started_at(pid) if started else None
    return actual is None or abs(actual - started) < 2


def started_at(pid: int) -> float | None:
    """The process's start time (seconds since the epoch, from Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat, open("/proc/stat") as system:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            boot = next(float(line.split()[1]) for line in system if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
