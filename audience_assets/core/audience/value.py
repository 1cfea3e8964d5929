"""Value-based audiences: each member's customer value, sent to Meta as `LOOKALIKE_VALUE` (a JSON number, never
hashed) so that a lookalike built from the audience ranks candidates by it.

On ingest a value column of the CRM export is parsed (`parsed_sql`: a plain non-negative number, finite) and each
customer keeps the largest valid value among their rows (`per_customer_sql`), in a column of the customers table
named by a digest of the source column's name (`value_alias`). A blank cell is no value; any other text (a
currency sign, a thousands separator, a negative balance) is no value too, and is counted as invalid. The plan
sends the value with each row (`field_sql`), leaves members without one out (Meta takes no row of a value-based
audience without a value) and keeps the largest where several customers give one row. `summarize` describes
the values sent, for the chunks' metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import duckdb

from audience_assets.core.config.audiences import Value
from audience_assets.core.duck import ident, literal, sql_path

FIELD = "LOOKALIKE_VALUE"
# digits with an optional fraction (or a bare fraction), an optional exponent: what a CRM's number column holds
NUMBER = r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"


def value_alias(column: str) -> str:
    """The customers table's column for a first-party value column (stable whatever other columns are added)."""
    return "aa_value_" + hashlib.sha256(column.encode()).hexdigest()[:12]


def parsed_sql(cell: str) -> str:
    """The cell as a DOUBLE when it is a plain, finite, non-negative number; NULL otherwise (blank included)."""
    text = f"trim(coalesce({cell}, ''))"
    return (
        f"CASE WHEN regexp_full_match({text}, {literal(NUMBER)}) AND isfinite(TRY_CAST({text} AS DOUBLE)) "
        f"THEN TRY_CAST({text} AS DOUBLE) END"
    )


def invalid_sql(cell: str) -> str:
    """True for a cell that holds something but not a value `parsed_sql` takes."""
    return f"(trim(coalesce({cell}, '')) <> '' AND ({parsed_sql(cell)}) IS NULL)"


def per_customer_sql(rows: str, aliases: list[str]) -> str:
    """One row per customer id with, per value alias, the largest valid value of their rows (NULL: none) and how
    many of their cells were invalid (`<alias>_invalid`): one pass over the export gives both."""
    columns = ", ".join(
        f"max({parsed_sql(ident(a))}) AS {ident(a)}, count(*) FILTER (WHERE {invalid_sql(ident(a))}) AS "
        f"{ident(a + '_invalid')}"
        for a in aliases
    )
    return f"SELECT trim(coalesce(customer_id, '')) AS customer_id, {columns} FROM {rows} GROUP BY 1"


def field_sql(value: Value) -> str:
    """The SELECT expression (over the customers table) giving the payload's value field."""
    return f"{ident(value_alias(value.column))} AS {ident(FIELD)}"


@dataclasses.dataclass(frozen=True)
class ValueSummary:
    """The values one plan sends (every desired row's), and the members left out for having none."""

    column: str
    rows: int
    without_value: int
    quantiles: dict[str, float]  # min, p25, median, p75, p90, max
    total: float
    histogram: list[tuple[float, float, int]]  # (from, to, rows), ten equal-width bins

    def metadata(self) -> dict[str, Any]:
        """Numbers Dagster plots across materializations, and the distribution as a table."""
        bars = "\n".join(f"| {lo:,.2f} – {hi:,.2f} | {n:,} |" for lo, hi, n in self.histogram)
        return {
            "value_column": self.column,
            "value_rows": self.rows,
            "members_without_value": self.without_value,
            **{f"value_{name}": round(q, 4) for name, q in self.quantiles.items()},
            "value_total": round(self.total, 2),
            "value_distribution": f"| {self.column} | rows |\n|---|---:|\n{bars}",
        }


def summarize(con: duckdb.DuckDBPyConnection, rows: Path, members: Path, customers: Path, value: Value) -> ValueSummary:
    """The distribution of the values in the plan's rows, and how many members have no value."""
    v = ident(FIELD)
    source = f"read_parquet({sql_path(rows)})"
    figures = con.execute(
        f"SELECT count(*), coalesce(min({v}), 0), coalesce(quantile_cont({v}, [0.25, 0.5, 0.75, 0.9]), "
        f"[0, 0, 0, 0]), coalesce(max({v}), 0), coalesce(sum({v}), 0) FROM {source}"
    ).fetchall()[0]
    count, low, (p25, median, p75, p90), high, total = figures
    width = (high - low) / 10 or 1.0
    bins = dict(
        con.execute(
            f"SELECT least(floor(({v} - {low}) / {width}), 9)::INTEGER AS b, count(*) FROM {source} GROUP BY b"
        ).fetchall()
    )
    histogram = [(low + i * width, low + (i + 1) * width, int(bins.get(i, 0))) for i in range(10)]
    without = con.execute(
        f"SELECT count(*) FROM read_parquet({sql_path(customers)}) WHERE {ident(value_alias(value.column))} IS NULL "
        f"AND customer_id IN (SELECT customer_id FROM read_parquet({sql_path(members)}))"
    ).fetchall()[0][0]
    quantiles = {"min": low, "p25": p25, "median": median, "p75": p75, "p90": p90, "max": high}
    return ValueSummary(value.column, int(count), int(without), quantiles, float(total), histogram)
