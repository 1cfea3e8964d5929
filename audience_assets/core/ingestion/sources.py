"""A source's delivery taken in, in one call whatever the source (a partner, the CRM export, the opt-outs): its
current files chosen by arrival (`arrivals`), read under its contract, judged by its delivery guards,
published or held, and remembered as the last accepted delivery, one writer at a time (`core.locks`).

The ingest assets call `ingest_source` and translate its `Outcome` into Dagster's terms (metadata, check
results); every rule of the stage lives here and below.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import duckdb

from audience_assets.core import layout
from audience_assets.core.config import DeliveryGuards, FileContract, ProjectConfig
from audience_assets.core.duck import connect, sql_path
from audience_assets.core.ingestion.arrivals import Current, current_files
from audience_assets.core.ingestion.first_party import ingest_first_party
from audience_assets.core.ingestion.guards import AcceptedDelivery, Verdict, judge_delivery, previous_delivery, remember
from audience_assets.core.ingestion.partner import ingest_partner
from audience_assets.core.ingestion.read import IngestReport
from audience_assets.core.ingestion.scan import DEFAULT_LIMITS, InflationLimits
from audience_assets.core.ingestion.suppression import ingest_suppression
from audience_assets.core.scratch import scratch
from audience_assets.core.store import Store, StoredObject, optional_copy

FIRST_PARTY, SUPPRESSION = "first_party", "suppression"


@dataclasses.dataclass(frozen=True)
class Published:
    """The table a delivery became: where it is, its rows and its columns (name, type)."""

    key: str
    uri: str
    rows: int
    columns: list[tuple[str, str]]


@dataclasses.dataclass
class Outcome:
    source: str
    files: list[str]  # the current files read
    not_read: dict[str, str]  # what else the source's prefix holds, and why it is not read
    report: IngestReport
    verdict: Verdict
    table: Published | None  # None: not published (held by its guards or its accounting, or standing)
    quarantine_uri: str = ""
    stands: AcceptedDelivery | None = None  # nothing current: this accepted delivery's data stands
    member: bool = False  # a collaboration member's table: it lives in the partner's account, nothing lands here
    identities: int | None = None  # a partner's distinct identities published

    @property
    def published(self) -> bool:
        return self.table is not None


def quarantine_key(source: str) -> str:
    return {FIRST_PARTY: layout.FIRST_PARTY_QUARANTINE, SUPPRESSION: layout.SUPPRESSION_QUARANTINE}.get(
        source
    ) or layout.partner_quarantine(source)


def table_key(source: str) -> str:
    return {FIRST_PARTY: layout.FIRST_PARTY_CUSTOMERS, SUPPRESSION: layout.SUPPRESSION_LIST}.get(
        source
    ) or layout.partner_table(source)


def ingest_source(
    store: Store,
    config: ProjectConfig,
    source: str,
    *,
    run_id: str = "",
    accept: bool = False,
    fallback: Callable[[], AcceptedDelivery | None] = lambda: None,
    limits: InflationLimits = DEFAULT_LIMITS,
) -> Outcome:
    """Take in `source`'s current delivery. `accept` overrules its guards for this run; `fallback` is what it is
    judged against when the store has no delivery record (a deployment upgraded from before records). The
    opt-out list only grows (the previous list is always part of the new one), so its guards report but
    never hold it."""
    sources = config.sources
    contract, guards = sources.contract(source), sources.guards_for(source)
    if source in config.partners and config.partners[source].clean_room.member:
        return _member(source, guards)
    with store.lock(f"source-{source}", owner=run_id):
        chosen = current_files(store, source, sources.prefix(source), contract)
        standing = _standing(store, source, chosen, guards)
        if standing is not None:
            return standing
        with scratch("ingest") as tmp, connect(tmp) as con, contextlib.ExitStack() as stack:
            work = _Work(con, tmp, stack)
            report, identities = _read_delivery(work, store, config, source, chosen.files, limits)
            verdict = _judge(store, source, report, contract, guards, accept=accept, fallback=fallback)
            published = _publish(work, store, source, report, verdict, run_id, chosen.files)
            store.upload(work.quarantine, quarantine_key(source))
        return Outcome(
            source,
            [f.key for f in chosen.files],
            chosen.not_read,
            report,
            verdict,
            published,
            quarantine_uri=store.uri(quarantine_key(source)),
            identities=identities,
        )


@dataclasses.dataclass(frozen=True)
class _Work:
    """Where one delivery is read: the connection, the scratch folder its table and quarantine are written to
    before upload, and the copies to release when it is done."""

    con: duckdb.DuckDBPyConnection
    dir: Path
    stack: contextlib.ExitStack

    @property
    def table(self) -> Path:
        return self.dir / "table.parquet"

    @property
    def quarantine(self) -> Path:
        return self.dir / "quarantine.parquet"


def _member(source: str, guards: DeliveryGuards) -> Outcome:
    """The outcome for a collaboration member's table: it lives in the partner's account, nothing is read here."""
    empty = IngestReport()
    return Outcome(source, [], {}, empty, Verdict(source, [], 0, 0, 0, 0.0, None, None, guards), None, member=True)


def _standing(store: Store, source: str, chosen: Current, guards: DeliveryGuards) -> Outcome | None:
    """The outcome when nothing is current but an accepted delivery is on record (moved away, retired, or
    superseded only): its data stands rather than being replaced by nothing. The opt-out list never stands."""
    if source == SUPPRESSION or chosen.files:
        return None
    record = previous_delivery(store, source)
    if record is None or not record.files:
        return None
    empty = IngestReport()
    return Outcome(source, [], chosen.not_read, empty, judge_delivery(source, empty, None, guards), None, stands=record)


def _read_delivery(
    work: _Work, store: Store, config: ProjectConfig, source: str, files: list[StoredObject], limits: InflationLimits
) -> tuple[IngestReport, int | None]:
    """Read the files under the source's contract into `work.table` and `work.quarantine`; returns the report
    and, for a partner, its distinct identities."""
    contract = config.sources.contract(source)
    common = dict(out_quarantine=work.quarantine, work_dir=work.dir, limits=limits)
    if source == FIRST_PARTY:
        report = ingest_first_party(
            work.con,
            store,
            files,
            contract=contract,
            keys=config.payload_keys,
            out_customers=work.table,
            consent_columns=config.consent_columns,
            value_columns=config.value_columns,
            **common,
        )
        return report, None
    if source == SUPPRESSION:
        # the retired opt-outs and the current list are read back: the list only grows
        kept = [
            work.stack.enter_context(optional_copy(store, k)) for k in (layout.SUPPRESSION_RETIRED, table_key(source))
        ]
        retired = [p for p in kept if p is not None]
        report = ingest_suppression(
            work.con, store, files, contract=contract, out_table=work.table, retired=retired, **common
        )
        return report, None
    return ingest_partner(work.con, store, files, partner=source, contract=contract, out_table=work.table, **common)


def _judge(
    store: Store,
    source: str,
    report: IngestReport,
    contract: FileContract,
    guards: DeliveryGuards,
    *,
    accept: bool,
    fallback: Callable[[], AcceptedDelivery | None],
) -> Verdict:
    """The guards' verdict on this delivery against the last accepted one. The opt-out list only grows, so it
    is always accepted and judged as an increment: its guards report but never hold it."""
    grows = source == SUPPRESSION
    return judge_delivery(
        source,
        report,
        previous_delivery(store, source) or fallback(),
        guards,
        accepted=grows or accept,
        incremental=grows or contract.delivery == "incremental",
    )


def _publish(
    work: _Work,
    store: Store,
    source: str,
    report: IngestReport,
    verdict: Verdict,
    run_id: str,
    files: list[StoredObject],
) -> Published | None:
    """Upload the table and remember the delivery as the last accepted one, unless its guards hold it or its
    rows do not add up (rows read != accepted + quarantined): a held delivery leaves the previous one in place."""
    if verdict.blocked or report.out_of_balance:
        return None
    table = work.table
    rows = work.con.execute(f"SELECT count(*) FROM read_parquet({sql_path(table)})").fetchall()[0][0]
    columns = work.con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(table)})").fetchall()
    store.upload(table, table_key(source))
    remember(store, source, report, verdict, run_id, {f.key: f.version for f in files})
    return Published(table_key(source), store.uri(table_key(source)), rows, [(c[0], str(c[1])) for c in columns])
