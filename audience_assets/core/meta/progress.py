"""What an upload is doing, told while it runs: batches acknowledged of those planned, rows, and the wait in
progress with its reason ("throttled by Meta (code 80003)...: waiting 60 s"), at least every `every` seconds.

A heartbeat thread writes the line on a wall-clock timer, so an upload that sleeps through a long throttle
or hangs on a slow answer is never silent; a wait of `announce_from` seconds or more is also told when it
starts.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from audience_assets.core.meta.pacer import Pacer, Wait


class UploadProgress:
    def __init__(
        self,
        label: str,
        pacer: Pacer,
        report: Callable[[str], None],
        *,
        batches: int,
        rows: int,
        every: float = 30.0,
        announce_from: float = 5.0,
    ):
        self.label, self.pacer, self.report = label, pacer, report
        self.batches, self.rows, self.every, self.announce_from = batches, rows, every, announce_from
        self.batches_done = self.rows_done = 0
        self._lock = threading.Lock()

    def acknowledged(self, rows: int) -> None:
        with self._lock:
            self.batches_done += 1
            self.rows_done += rows

    def resumed(self, batches: int, rows: int) -> None:
        """Batches an earlier run had acknowledged: done before this run starts."""
        with self._lock:
            self.batches_done += batches
            self.rows_done += rows

    def line(self, wait: Wait | None = None) -> str:
        with self._lock:
            text = (
                f"{self.label}: {self.batches_done:,}/{self.batches:,} batches acknowledged, "
                f"{self.rows_done:,}/{self.rows:,} rows"
            )
        wait = wait or self.pacer.current
        if wait is not None:
            text += f"; {wait.why}: waiting {wait.seconds:,.0f} s"
        return text

    def _waiting(self, wait: Wait) -> None:
        if wait.seconds >= self.announce_from:
            self.report(self.line(wait))

    @contextlib.contextmanager
    def running(self) -> Iterator[UploadProgress]:
        """Report at the start, every `every` seconds, and at the end."""
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(self.every):
                self.report(self.line())

        self.report(self.line())
        self.pacer.on_wait = self._waiting
        thread = threading.Thread(target=heartbeat, name="meta-upload-progress", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.pacer.on_wait = None
            self.report(self.line())
