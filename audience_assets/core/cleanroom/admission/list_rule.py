"""LIST rules: one SELECT of allowed columns, joined on join columns; rows below the output
constraints dropped silently. A single OR join (the form a LIST rule admits for "any key") runs as a UNION."""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

from audience_assets.core.cleanroom.admission.common import (
    LEGACY_DIALECT as DIALECT,
)
from audience_assets.core.cleanroom.admission.common import (
    QueryRejected,
    _columns_outside,
    _conditions,
    _functions,
    _list,
    _resolve,
    _Source,
)


def _admit_list(select: exp.Select, sources: Mapping[str, _Source]) -> str:
    if not select.args.get("distinct"):
        raise QueryRejected("List queries must use SELECT DISTINCT")
    for key, clause in (
        ("group", "GROUP BY"),
        ("having", "HAVING"),
        ("order", "ORDER BY"),
        ("offset", "OFFSET"),
        ("qualify", "QUALIFY"),
    ):
        if select.args.get(key):
            raise QueryRejected(f"{clause} is not allowed in list queries")
    function = next(_functions(select), None)
    if function is not None:
        raise QueryRejected(f"Functions are not allowed in list queries: {function.sql(dialect=DIALECT)}")
    limit = select.args.get("limit")
    if limit is not None and not (
        isinstance(limit.expression, exp.Literal) and limit.expression.is_int and int(limit.expression.name) > 0
    ):
        raise QueryRejected("LIMIT takes a positive integer")
    if select.find(exp.Star):
        raise QueryRejected("SELECT * is not allowed in list queries; name the list columns")
    for clause, node in (("select", exp.Tuple(expressions=select.expressions)), ("where", select.args.get("where"))):
        refused = [
            name
            for s, name in (_resolve(c, sources) for c in _columns_outside(node, ()))
            if name not in s.table.rule.list_columns
        ]
        if refused:
            raise QueryRejected(f"Column(s) {_list(dict.fromkeys(refused))} is not allowed in {clause}")
    return _or_join_as_union(select) or select.sql(dialect="duckdb")


def _or_join_as_union(select: exp.Select) -> str | None:
    """A DISTINCT select with one join on `a = b OR c = d ...`, as a UNION of equi-joins: the same rows,
    but every branch can hash-join (DuckDB runs an OR condition as a nested-loop join)."""
    joins = select.args.get("joins") or []
    if len(joins) != 1:
        return None
    operators: set[str] = set()
    leaves = _conditions(joins[0].args["on"], operators)
    if operators != {"OR"}:
        return None
    branches = []
    for leaf in leaves:
        branch = select.copy()
        branch.set("limit", None)
        branch.args["joins"][0].set("on", leaf.copy())
        branches.append(branch.sql(dialect="duckdb"))
    limit = select.args.get("limit")
    union = " UNION ".join(f"({b})" for b in branches)
    return f"SELECT * FROM ({union}) AS __aa_q" + (f" LIMIT {limit.expression.name}" if limit is not None else "")
