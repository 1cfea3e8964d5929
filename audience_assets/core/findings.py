"""One shape for what a judge concludes, whatever it judged: a delivery against its guards
(`ingestion.guards.Verdict`), a plan's removals (`audience.approval.RemovalReview`), the Marketing API version
(`meta.versions.Lifecycle`), Meta's account of an audience (`meta.health.Judgement`), or a count.

Each judge keeps its own facts and wording, and says what it concluded as a `Finding`: passed or not, whether
a failure stops what follows (blocking) or only warns, the sentence a person reads, and the figures. The Dagster
layer turns every finding into an asset check result with one converter (`defs.findings.check_result`), and the
headless commands print the same sentence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Finding:
    passed: bool
    blocking: bool  # a failure stops what follows (nothing is published or sent); else it only warns
    message: str | None = None  # what a person reads: why, with the numbers, and what to do
    metadata: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return self.blocking and not self.passed


class Held(RuntimeError):
    """Nothing was published or sent, on purpose: the message says why and what to do, `metadata` carries the
    figures. (A step that raises it fails with that message, not as a crash.)"""

    def __init__(self, message: str, metadata: Mapping[str, object] | None = None):
        super().__init__(message)
        self.metadata = dict(metadata or {})
