"""Who is in an audience: anyone a selected partner segment matched, deduplicated, minus everyone on the
opt-out list, minus the control arm of its holdout (`holdout`). DuckDB over Parquet; Python sees counts and file
names only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

from audience_assets.core.audience.holdout import CONTROL, Arms, write_arms
from audience_assets.core.config import Audience
from audience_assets.core.duck import literal, parquet_columns, sql_path


@dataclasses.dataclass(frozen=True)
class MemberCounts:
    qualified: int  # matched a partner selection
    suppressed: int  # of those, opted out
    members: int  # what remains, less the holdout's control arm
    arms: Arms  # the split (without a holdout, everyone is treatment)


def _parquet(path: Path) -> str:
    return f"read_parquet({sql_path(path)})"


def _qualify_sql(partner: str, matches: Path, segments: Mapping[str, Sequence[str]]) -> str:
    if not segments:
        return f"SELECT DISTINCT customer_id FROM {_parquet(matches)}"
    having = " AND ".join(
        f"bool_or(segment_name = {literal(name)} AND segment_value IN ({', '.join(literal(v) for v in values)}))"
        for name, values in segments.items()
    )
    return f"SELECT customer_id FROM {_parquet(matches)} GROUP BY customer_id HAVING {having}"


def suppressed_customers_sql(con: duckdb.DuckDBPyConnection, customers: Path, suppression: Path | None) -> str:
    """Customer ids whose email, phone, device id or customer id is on the opt-out list."""
    if suppression is None:
        return "SELECT CAST(NULL AS VARCHAR) AS customer_id WHERE FALSE"
    c, s = _parquet(customers), _parquet(suppression)
    columns = set(parquet_columns(con, customers))
    parts = [f"SELECT customer_id FROM {s} WHERE customer_id IS NOT NULL"]
    parts += [
        f"SELECT c.customer_id FROM {c} c JOIN {s} s ON c.{k} = s.{col}"
        for k, col in (("EMAIL", "hashed_email"), ("PHONE", "hashed_phone"))
        if k in columns
    ]
    if "MADID" in columns:
        parts.append(f"SELECT c.customer_id FROM {c} c JOIN {s} s ON sha256(nullif(c.MADID, '')) = s.hashed_madid")
    return " UNION ".join(parts)


def select_members(
    con: duckdb.DuckDBPyConnection,
    *,
    audience: Audience,
    matches: Mapping[str, Path],
    customers: Path,
    suppression: Path | None,
    out: Path,
    arms_out: Path,
) -> MemberCounts:
    """Write the audience's member customer ids (sorted) to `out`: anyone qualifying through any of its
    partners, minus everyone suppressed, minus its holdout's control arm; every eligible id and its arm go to
    `arms_out` (all treatment when the audience has no holdout)."""
    qualified = " UNION ".join(_qualify_sql(p, matches[p], segments) for p, segments in audience.select.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE aa_qualified AS {qualified}")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE aa_suppressed AS SELECT customer_id FROM aa_qualified "
        f"WHERE customer_id IN ({suppressed_customers_sql(con, customers, suppression)})"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE aa_eligible AS "
        "SELECT customer_id FROM aa_qualified EXCEPT SELECT customer_id FROM aa_suppressed"
    )
    arms = write_arms(con, audience, "aa_eligible", customers, arms_out)
    con.execute(
        f"COPY (SELECT customer_id FROM aa_arms WHERE arm <> {literal(CONTROL)} ORDER BY customer_id) "
        f"TO {sql_path(out)} (FORMAT parquet)"
    )
    qualified, suppressed = con.execute(
        "SELECT (SELECT count(*) FROM aa_qualified), (SELECT count(*) FROM aa_suppressed)"
    ).fetchall()[0]
    return MemberCounts(qualified, suppressed, arms.treatment, arms)
