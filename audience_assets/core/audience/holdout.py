"""Holdout groups: a control arm kept out of the upload, so lift can be measured against it.

A member's arm is a pure function of the audience's salt and their customer id: the first 52 bits of
SHA-256(salt, U+001F, customer id), read as an integer, below `share` of 2^52 is control. So a person stays in their
arm across runs, whatever else changes in the data, and across every audience split with the same salt. Only the
treatment arm becomes the audience's members (what reaches Meta); both arms are written to the advertiser's
storage (`audience_holdout`) and never sent anywhere. An audience without a holdout records everyone as
treatment, so every audience partition of `audience_holdout` materializes (a backfill of all asks for all).

Changing the share or the salt moves people between arms (some leave Meta's audience, others join it), so it is a
reviewed change: the selection holds, publishing nothing, until a run approves it for that audience by name, as a
large removal waits for its approval. A holdout added to, or dropped from, an audience that already has members
is such a change too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from audience_assets.core import layout
from audience_assets.core.audience.approval import APPROVE_HOLDOUT_TAG, named_in
from audience_assets.core.config import Audience
from audience_assets.core.duck import literal, parquet_columns, sql_path
from audience_assets.core.findings import Held
from audience_assets.core.store import Store

BUCKET_BITS = 52  # an integer every engine holds exactly (DuckDB's UBIGINT, a double, Python's int)
CONTROL, TREATMENT = "control", "treatment"
BALANCE_KEYS = ("EMAIL", "PHONE")  # first-party attributes the arms are compared on: who can be matched by what


def threshold(share: float) -> int:
    """Buckets below this are control: for an integer bucket, `bucket < share * 2^52` exactly."""
    return math.ceil(share * 2**BUCKET_BITS)


def arm_sql(audience: Audience, column: str = "customer_id") -> str:
    """The arm of each row's customer id, as SQL (DuckDB's sha256 over UTF-8, like hashlib)."""
    holdout = audience.holdout
    if holdout is None:
        return literal(TREATMENT)
    digest = f"sha256({literal(holdout.salt)} || chr(31) || {column})"
    bucket = f"CAST('0x' || substr({digest}, 1, {BUCKET_BITS // 4}) AS UBIGINT)"
    return f"CASE WHEN {bucket} < {threshold(holdout.share)} THEN {literal(CONTROL)} ELSE {literal(TREATMENT)} END"


@dataclasses.dataclass(frozen=True)
class Arms:
    """The split as written: arm sizes and, per balance key, the share of each arm that has that identifier."""

    share: float
    salt: str
    treatment: int
    control: int
    present: Mapping[str, Mapping[str, float]]  # key -> arm -> share with the identifier

    @property
    def z(self) -> float:
        """How far the control count is from its expectation, in binomial standard deviations."""
        n = self.treatment + self.control
        spread = math.sqrt(n * self.share * (1 - self.share)) if n else 0.0
        return (self.control - n * self.share) / spread if spread else 0.0

    def metadata(self) -> dict[str, Any]:
        """Arm sizes; with a holdout, the control count's z and the arms' balance too."""
        if not self.share:
            return {"holdout/share": 0.0, "holdout/treatment": self.treatment, "holdout/control": self.control}
        figures: dict[str, Any] = {
            "holdout/share": self.share,
            "holdout/salt": self.salt,
            "holdout/treatment": self.treatment,
            "holdout/control": self.control,
            "holdout/control_share": round(self.control / max(1, self.treatment + self.control), 4),
            "holdout/z": round(self.z, 2),
        }
        for key, by_arm in self.present.items():
            figures[f"holdout/{key.lower()}_present/treatment"] = round(by_arm[TREATMENT], 4)
            figures[f"holdout/{key.lower()}_present/control"] = round(by_arm[CONTROL], 4)
            figures[f"holdout/{key.lower()}_present/smd"] = round(standardized_difference(by_arm), 3)
        return figures


def standardized_difference(by_arm: Mapping[str, float]) -> float:
    """Treatment minus control in pooled standard deviations of a yes/no attribute (|d| < 0.1: balanced)."""
    t, c = by_arm[TREATMENT], by_arm[CONTROL]
    pooled = math.sqrt((t * (1 - t) + c * (1 - c)) / 2)
    return (t - c) / pooled if pooled else 0.0


def write_arms(con: duckdb.DuckDBPyConnection, audience: Audience, eligible: str, customers: Path, out: Path) -> Arms:
    """Write every eligible customer id with its arm to `out` (sorted) and measure the arms; `eligible` is a table
    of customer ids (the audience's members before the split)."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE aa_arms AS SELECT customer_id, {arm_sql(audience)} AS arm FROM {eligible}"
    )
    con.execute(f"COPY (SELECT customer_id, arm FROM aa_arms ORDER BY customer_id) TO {sql_path(out)} (FORMAT parquet)")
    if audience.holdout is None:  # one arm: nothing to balance, so no join with the first-party table
        keys, rows = [], con.execute("SELECT arm, count(*) FROM aa_arms GROUP BY arm").fetchall()
    else:
        keys = [k for k in BALANCE_KEYS if k in parquet_columns(con, customers)]
        present = "".join(f", avg(CASE WHEN coalesce(c.{k}, '') <> '' THEN 1.0 ELSE 0.0 END)" for k in keys)
        rows = con.execute(  # first_party_customers holds one row per customer id (ingestion keeps the first)
            f"SELECT a.arm, count(*){present} FROM aa_arms a "
            f"LEFT JOIN read_parquet({sql_path(customers)}) c USING (customer_id) GROUP BY a.arm"
        ).fetchall()
    by_arm = {row[0]: row for row in rows}
    count = {arm: by_arm[arm][1] if arm in by_arm else 0 for arm in (TREATMENT, CONTROL)}
    shares = {
        key: {arm: float(by_arm[arm][2 + i] or 0.0) if arm in by_arm else 0.0 for arm in (TREATMENT, CONTROL)}
        for i, key in enumerate(keys)
    }
    holdout = audience.holdout
    return Arms(
        holdout.share if holdout else 0.0, holdout.salt if holdout else "", count[TREATMENT], count[CONTROL], shares
    )


# ##### A CHANGED SPLIT WAITS FOR APPROVAL


def spec(audience: Audience) -> dict[str, Any] | None:
    return audience.holdout.model_dump() if audience.holdout else None


def recorded_spec(store: Store, name: str) -> tuple[bool, dict[str, Any] | None]:
    """(whether the audience has a past, the split it was last published with). Members published before this
    record existed were published without a holdout."""
    raw = store.get_bytes(layout.holdout_record(name))
    if raw:
        return True, json.loads(raw).get("holdout")
    return store.version(layout.audience_members(name)) is not None, None


def record_spec(store: Store, name: str, audience: Audience) -> None:
    store.put_bytes(layout.holdout_record(name), json.dumps({"holdout": spec(audience)}, sort_keys=True).encode())


def describe_spec(holdout: Mapping[str, Any] | None) -> str:
    return f"share {holdout['share'] * 100:g}%, salt {holdout['salt']!r}" if holdout else "no holdout"


def hold_unapproved_change(store: Store, name: str, audience: Audience, tags: Mapping[str, str]) -> str | None:
    """Raise `Held` when the audience's split differs from the one its members were last published with and no
    run approved the change; return a line for the log when an approved change goes ahead."""
    past, before = recorded_spec(store, name)
    after = spec(audience)
    if not past or before == after:
        return None
    change = f"{name}: the holdout changed from {describe_spec(before)} to {describe_spec(after)}"
    if named_in(tags, APPROVE_HOLDOUT_TAG, name):
        return change + "; approved for this run: people move between arms (some leave Meta's audience, some join)."
    raise Held(
        change + ", which moves people between arms (control members leave Meta's audience, treatment members "
        "join it). Nothing was published. If the change is meant, approve it for one run: "
        f"`python -m audience_assets run --approve-holdout {name}`, or materialize audience_members for {name} "
        f"with the run tag {APPROVE_HOLDOUT_TAG}={name}.",
        {"holdout/before": describe_spec(before), "holdout/after": describe_spec(after)},
    )
