"""Test helpers for uploads: synthetic audiences as Meta payload rows, planned, stored and delivered
exactly as the assets do it (plan.plan_upload -> plan.store_plan -> delivery.deliver)."""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from audience_assets.core import layout
from audience_assets.core.audience.plan import Plan, load_plan, plan_upload, row_id_sql, store_plan
from audience_assets.core.config import Audience
from audience_assets.core.duck import connect, sql_path
from audience_assets.core.meta.binding import planned_audience_id
from audience_assets.core.settings import SANDBOX_AD_ACCOUNT
from audience_assets.core.store import Store, optional_copy
from audience_assets_tests.oracle import canonical_row_key

KEYS = ["EMAIL", "PHONE", "EXTERN_ID"]


class FakeClock:
    """A client's clock in tests: `sleep` records the wait and moves the clock, so no wall time passes.
    Thread-safe; concurrent sleeps add up (a pessimistic clock, never a stuck one)."""

    def __init__(self, waits: list[float] | None = None, start: float = 1_000_000.0):
        self.now, self.waits = start, waits if waits is not None else []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def spec(mode: str, name: str = "Upload test", chunk_rows: int = 10_000) -> Audience:
    return Audience(meta_name=name, select={"partner": {}}, keys=KEYS, mode=mode, chunk_rows=chunk_rows)


def cells_sql(ids_table: str) -> str:
    return (
        f"SELECT sha256('user' || i || '@example.com') AS EMAIL, sha256(CAST(15550000000 + i AS VARCHAR)) AS PHONE, "
        f"'c' || i AS EXTERN_ID FROM {ids_table}"
    )


def plan(storage: Store, audience: str, audience_spec: Audience, ids: Iterable[int]) -> Plan:
    """Plan the upload that makes the audience hold exactly `ids` (against the record of the Meta audience it is
    bound to in the sandbox's ad account, as `audience_chunks` does), store it, and return it."""
    basis = planned_audience_id(storage, audience, audience_spec, SANDBOX_AD_ACCOUNT)
    version = (storage.version(layout.confirmed(audience, basis)) or "") if basis else ""
    with (
        tempfile.TemporaryDirectory() as tmp,
        connect(Path(tmp)) as con,
        optional_copy(storage, layout.confirmed(audience, basis)) as confirmed,
    ):
        con.execute("CREATE TABLE ids (i BIGINT)")
        con.execute("INSERT INTO ids SELECT unnest(?)", [list(ids)])
        desired = Path(tmp) / "desired.parquet"
        con.execute(
            f"COPY (SELECT {row_id_sql(KEYS)} AS row_id, * FROM ({cells_sql('ids')})) TO {sql_path(desired)} "
            "(FORMAT parquet)"
        )
        planned = plan_upload(
            con,
            audience=audience,
            mode=audience_spec.mode,
            keys=KEYS,
            desired=desired,
            confirmed=confirmed if basis else None,
            suppression=None,
            out_dir=Path(tmp) / "chunks",
            chunk_rows=audience_spec.chunk_rows,
        )
        store_plan(storage, audience, dataclasses.replace(planned, basis_audience_id=basis, basis_version=version))
    loaded = load_plan(storage, audience)
    assert loaded is not None
    return loaded


def expected_members(ids: Iterable[int]) -> set[str]:
    """The sandbox's canonical keys of the rows for `ids`, computed in Python."""
    import hashlib

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    return {
        canonical_row_key(
            {"EMAIL": sha(f"user{i}@example.com"), "PHONE": sha(str(15550000000 + i)), "EXTERN_ID": f"c{i}"}
        )
        for i in ids
    }
