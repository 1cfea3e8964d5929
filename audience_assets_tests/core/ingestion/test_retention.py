"""Retention's judgement per file, on a local store: the last accepted snapshot stays while a newer one waits
for acceptance, and goes once the newer one is accepted; nothing not ingested at its version is deleted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from audience_assets.core.config import load_config
from audience_assets.core.ingestion.guards import judge_delivery, remember
from audience_assets.core.ingestion.read import FileReport, IngestReport
from audience_assets.core.ingestion.retention import apply_retention
from audience_assets.core.store import LocalStore


def accept(store: LocalStore, key: str) -> None:
    """Record `key` (at its current version) as the acme delivery that was published."""
    report = IngestReport([FileReport(key, 10, 10, 0)])
    version = next(o.version for o in store.list(key.rsplit("/", 1)[0]) if o.key == key)
    verdict = judge_delivery("acme_data", report, None, load_config().sources.guards_for("acme_data"))
    remember(store, "acme_data", report, verdict, "run", {key: version})


def test_the_accepted_snapshot_stays_while_a_newer_one_waits(tmp_path: Path):
    store, config = LocalStore(tmp_path), load_config()
    folder = tmp_path / "landing" / "partners" / "acme_data"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("Email Address\na@example.com\n")
    accept(store, "landing/partners/acme_data/a.csv")
    (folder / "b.csv").write_text("Email Address\n")  # newer, held by its guards (empty): not accepted
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)

    held = apply_retention(store, config, default_days=0, now=later)
    assert held.deleted == []
    assert held.kept == {
        "landing/partners/acme_data/a.csv": "the last accepted delivery, while a newer one is not accepted yet",
        "landing/partners/acme_data/b.csv": "not yet ingested and published (at this version)",
    }
    accept(store, "landing/partners/acme_data/b.csv")  # the newer one is accepted after all
    done = apply_retention(store, config, default_days=0, now=later)
    assert sorted(done.deleted) == ["landing/partners/acme_data/a.csv", "landing/partners/acme_data/b.csv"]
