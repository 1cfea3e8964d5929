"""AGGREGATION rules: only the allowed aggregates over aggregate columns, grouped by dimension
columns, with each group's minimum distinct count enforced as a hidden count."""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

from audience_assets.core.cleanroom.admission.common import (
    LEGACY_DIALECT as DIALECT,
)
from audience_assets.core.cleanroom.admission.common import (
    QueryRejected,
    _clauses,
    _columns_outside,
    _functions,
    _list,
    _resolve,
    _Source,
    _with_hidden_counts,
)

_AGGREGATES = {exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG"}


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.upper()
    return type(node).sql_names()[0] if type(node).sql_names() else type(node).__name__.upper()


def _admit_aggregation(select: exp.Select, sources: Mapping[str, _Source]) -> str:
    """The query as it may run under AGGREGATION rules: each check refuses with the message the service gives."""
    _refuse_shape(select)
    for aggregate in select.find_all(exp.AggFunc):
        _check_aggregate(aggregate, sources)
    _check_clause_columns(select, sources)
    _check_scalar_functions(select, sources)
    _check_grouping(select, sources)
    # every copy of a table (a self-join) meets its constraints on its own
    counts = [
        (exp.column(column, table=alias), minimum)
        for alias, source in sources.items()
        for column, minimum in source.table.rule.output_constraints.items()
    ]
    return _with_hidden_counts(select, counts)


def _refuse_shape(select: exp.Select) -> None:
    """Refuse what no aggregation query may hold, whatever the tables: row limits, SELECT *, misplaced aggregates."""
    if select.args.get("limit") or select.args.get("offset"):
        raise QueryRejected("LIMIT, TOP and OFFSET are not allowed in aggregation queries")
    if select.find(exp.Star) and not all(isinstance(s.parent, exp.Count) for s in select.find_all(exp.Star)):
        raise QueryRejected("SELECT * is not allowed in aggregation queries")
    for clause in ("where", "group"):
        node = select.args.get(clause)
        if node is not None and node.find(exp.AggFunc):
            raise QueryRejected(
                f"Aggregate functions are not allowed in {'GROUP BY' if clause == 'group' else 'WHERE'}"
            )


def _check_aggregate(aggregate: exp.AggFunc, sources: Mapping[str, _Source]) -> None:
    """Refuse an aggregate unless it applies a function the rule allows to one aggregate column."""
    kind = _AGGREGATES.get(type(aggregate))
    if kind is None:
        raise QueryRejected(f"Aggregate function {_function_name(aggregate)} is not allowed")
    argument = aggregate.this
    distinct = isinstance(argument, exp.Distinct)
    if distinct:
        argument = argument.expressions[0] if len(argument.expressions) == 1 else None
    if isinstance(argument, exp.Star):
        raise QueryRejected("COUNT(*) is not allowed; count an aggregate column")
    if not isinstance(argument, exp.Column):
        raise QueryRejected(
            f"Only columns are allowed as arguments of aggregate functions: {aggregate.sql(dialect=DIALECT)}"
        )
    source, column = _resolve(argument, sources)
    function = f"{kind}_DISTINCT" if distinct else kind
    if function not in source.table.rule.aggregate_columns.get(column, ()):
        raise QueryRejected(f"Aggregate function {function} is not allowed on column {source.table.name}.{column}")


def _check_clause_columns(select: exp.Select, sources: Mapping[str, _Source]) -> None:
    """Refuse a column outside an aggregate unless it is a dimension column (or, in HAVING and ORDER BY, an alias)."""
    outputs = {s.alias_or_name.lower() for s in select.expressions if isinstance(s, exp.Alias)}
    for clause, node in _clauses(select):
        refused = []
        for column in _columns_outside(node, (exp.AggFunc,)):
            if not column.table and column.name.lower() in outputs and clause in ("having", "order by"):
                continue  # an output alias
            source, name = _resolve(column, sources)
            if name not in source.table.rule.dimension_columns:
                refused.append(name)
        if refused:
            raise QueryRejected(f"Column(s) {_list(dict.fromkeys(refused))} is not allowed in {clause}")


def _check_scalar_functions(select: exp.Select, sources: Mapping[str, _Source]) -> None:
    """Refuse a scalar function that a table it touches (or, touching none, any table) does not allow."""
    for function in _functions(select):
        if isinstance(function, exp.AggFunc) or function.find_ancestor(exp.AggFunc):
            continue
        name = _function_name(function)
        applied_to = [_resolve(c, sources)[0].table for c in function.find_all(exp.Column)] or [
            s.table for s in sources.values()
        ]
        refusing = sorted({t.name for t in applied_to if name not in t.rule.scalar_functions})
        if refusing:
            raise QueryRejected(f"Function {name} is not allowed for table {refusing[0]}")


def _check_grouping(select: exp.Select, sources: Mapping[str, _Source]) -> None:
    """Refuse a selected column that is neither aggregated nor grouped, and a select with no aggregate at all."""
    grouped = {
        g.sql(dialect=DIALECT).lower() for g in (select.args["group"].expressions if select.args.get("group") else [])
    }
    ungrouped = []
    for item in select.expressions:
        plain = item.unalias()
        if plain.find(exp.AggFunc) or plain.sql(dialect=DIALECT).lower() in grouped:
            continue
        for column in plain.find_all(exp.Column):
            source, name = _resolve(column, sources)
            ungrouped.append(f"{source.table.name}.{name}")
    if ungrouped:
        raise QueryRejected(f"Column(s) {_list(dict.fromkeys(ungrouped))} must appear in group by clause")
    if not any(item.find(exp.AggFunc) for item in select.expressions):
        raise QueryRejected("Aggregation queries need at least one aggregate function in select")
