"""An audience's upload plan, made in one call: its wanted payload rows (members' hashed identifiers, Limited
Data Use fields), compared with what the Meta audience it will be sent to holds on record, under the privacy
floor, with every outbound cell checked.

`audience_chunks` makes the plan against the record of the Meta audience the audience is bound to; when the
upload finds that audience gone (or another bound, see `core.meta.binding`), `rebase` makes it again, from the
same inputs, against the record of the audience it will really go to.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import duckdb

from audience_assets.core import layout
from audience_assets.core.audience.floor import below_floor, members_after
from audience_assets.core.audience.ldu import FIELDS as LDU_FIELDS
from audience_assets.core.audience.ldu import LDU, consent_alias, field_sql
from audience_assets.core.audience.outbound import outbound_cell_problems
from audience_assets.core.audience.plan import Plan, build_rows, plan_upload, store_plan
from audience_assets.core.audience.value import FIELD as VALUE_FIELD
from audience_assets.core.audience.value import ValueSummary, summarize, value_alias
from audience_assets.core.audience.value import field_sql as value_field_sql
from audience_assets.core.config import Audience
from audience_assets.core.duck import connect, ident, literal, parquet_columns, sql_path
from audience_assets.core.scratch import scratch
from audience_assets.core.store import Store, optional_copy


class PlanRefused(ValueError):
    """No plan may be made (the privacy floor, an input that predates the configuration); nothing is sent."""


@dataclasses.dataclass(frozen=True)
class Planned:
    plan: Plan  # its chunks still local files (`store_plan` uploads them)
    desired: int  # distinct payload rows wanted
    keys: tuple[str, ...]  # the payload schema
    cell_problems: dict[str, int]  # outbound cells Meta must not receive, per key (empty: none)
    values: ValueSummary | None = None  # a value-based audience's values, as sent


def make_plan(store: Store, audience: str, spec: Audience, basis_audience_id: str, work_dir: Path) -> Planned:
    """The plan that makes the Meta audience `basis_audience_id` ("" for one with nothing on record) hold the
    audience's members, its chunk files under `work_dir`. Raises `PlanRefused` below the privacy floor."""
    record = layout.confirmed(audience, basis_audience_id) if basis_audience_id else ""
    basis_version = (store.version(record) or "") if record else ""  # read before the record itself
    with connect(work_dir) as con, contextlib.ExitStack() as stack:
        members = stack.enter_context(store.local_copy(layout.audience_members(audience)))
        if spec.mode != "remove":
            _refuse(below_floor(audience, spec.min_size, members=_count(con, members)))
        customers = stack.enter_context(store.local_copy(layout.FIRST_PARTY_CUSTOMERS))
        suppression = stack.enter_context(optional_copy(store, layout.SUPPRESSION_LIST))
        confirmed = stack.enter_context(optional_copy(store, record)) if record else None
        _refuse(_predates(con, audience, spec, customers))
        rows = work_dir / "rows.parquet"
        desired, keys, values = _payload_rows(con, audience, spec, members, customers, rows)
        plan = plan_upload(
            con,
            audience=audience,
            mode=spec.mode,
            keys=keys,
            desired=rows,
            confirmed=confirmed,
            suppression=suppression,
            out_dir=work_dir / "chunks",
            chunk_rows=spec.chunk_rows,
        )
        _refuse(below_floor(audience, spec.min_size, after=members_after(plan)))
        chunks = [c.path for op in plan.operations for c in op.chunks if c.path is not None]
        problems = outbound_cell_problems(con, chunks, keys)
    plan = dataclasses.replace(plan, basis_audience_id=basis_audience_id, basis_version=basis_version)
    return Planned(plan, desired, keys, problems, values)


def needs_rebase(store: Store, audience: str, plan: Plan, audience_id: str) -> bool:
    """Whether `plan` was made against another record than the one `audience_id` (the Meta audience it is about
    to be sent to) has now: another audience's, or this one's before an upload changed it."""
    now = store.version(layout.confirmed(audience, audience_id)) or ""
    return plan.basis_version != now or (plan.basis_audience_id not in ("", audience_id))


def rebase(store: Store, audience: str, spec: Audience, audience_id: str) -> Plan:
    """The audience's plan made again against the record of `audience_id` and stored in place of the old one.
    Refused like the original (privacy floor, outbound cells); the removal guard is the caller's to apply."""
    with scratch("rebase") as tmp:
        planned = make_plan(store, audience, spec, audience_id, tmp)
        if planned.cell_problems:
            shown = ", ".join(f"{k} {n:,}" for k, n in planned.cell_problems.items())
            raise PlanRefused(f"{audience}: outbound cells Meta must not receive ({shown}); nothing was sent")
        return store_plan(store, audience, planned.plan)


def _payload_rows(
    con: duckdb.DuckDBPyConnection, audience: str, spec: Audience, members: Path, customers: Path, out: Path
) -> tuple[int, tuple[str, ...], ValueSummary | None]:
    """The members' payload rows written to `out`: (distinct rows, the payload schema, the values sent). The
    schema is the audience's keys, then the three Limited Data Use fields, then the value."""
    ldu = field_sql(spec.data_processing) if spec.data_processing else []
    worth = [value_field_sql(spec.value)] if spec.value else []
    prefer = f"{ident(LDU_FIELDS[0])} = {literal(LDU)} DESC" if ldu else "1"
    desired = build_rows(
        con,
        members=members,
        customers=customers,
        keys=spec.keys,
        out=out,
        extra=[*ldu, *worth],
        # a value-based audience sends no row without a value; of the rows one person gives, LDU wins and the
        # row carries the largest value
        where=f"{ident(value_alias(spec.value.column))} IS NOT NULL" if spec.value else "TRUE",
        prefer=prefer,
        largest=VALUE_FIELD if worth else None,
    )
    values = summarize(con, out, members, customers, spec.value) if spec.value else None
    if values is not None and not values.rows:
        raise PlanRefused(
            f"{audience}: none of its members has a value in {values.column!r} (a value-based audience sends "
            "each member's value): fill the column in the CRM export, or remove value:"
        )
    keys = (*spec.keys, *(LDU_FIELDS if ldu else ()), *((VALUE_FIELD,) if worth else ()))
    return desired, keys, values


def _predates(con: duckdb.DuckDBPyConnection, audience: str, spec: Audience, customers: Path) -> str | None:
    """Why the ingested CRM table cannot serve the audience's data_processing.column or value column (it was
    ingested before the setting), or None."""
    columns = set(parquet_columns(con, customers))
    wanted = []
    if spec.data_processing and spec.data_processing.column:
        wanted.append(("data_processing.column", spec.data_processing.column, consent_alias))
    if spec.value:
        wanted.append(("value.column", spec.value.column, value_alias))
    for setting, column, alias in wanted:
        if alias(column) not in columns:
            return (
                f"{audience}: {setting} {column!r} is not in the ingested CRM table (it predates the setting): "
                "materialize first_party_customers again"
            )
    return None


def _refuse(problem: str | None) -> None:
    if problem:
        raise PlanRefused(problem)


def _count(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    return con.execute(f"SELECT count(*) FROM read_parquet({sql_path(path)})").fetchall()[0][0]
