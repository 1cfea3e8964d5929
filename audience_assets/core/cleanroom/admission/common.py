"""What every rule type's admission shares: the rejection, template parameters, the grammar's walk over
tables, joins and columns, and the hidden counts that enforce output constraints."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import traverse_scope

from audience_assets.core.cleanroom.rules import AggregationRule, ConfiguredTable, ListRule

# The grammar queries are parsed in. Spark SQL: the only engine of AWS Clean Rooms since 2025-12-17, whose rules
# are CUSTOM. The legacy "Clean Rooms SQL" engine (LIST and AGGREGATION rules) parsed like Redshift (it accepts
# `SELECT TOP n DISTINCT`); a collaboration whose tables carry such rules is judged in that grammar.
DIALECT = "spark"
LEGACY_DIALECT = "redshift"


def dialect(tables: Mapping[str, ConfiguredTable]) -> str:
    """The grammar of a collaboration: Spark, unless a table carries a rule of the legacy engine."""
    return DIALECT if all(t.rule.kind == "CUSTOM" for t in tables.values()) else LEGACY_DIALECT


MAX_TABLES = 15
MAX_QUERY_CHARS = 500_000
_INTEGER_TYPES = {"SMALLINT", "INTEGER", "BIGINT"}
_NUMBER_TYPES = {"DECIMAL", "REAL", "DOUBLE_PRECISION", "FLOAT", "DOUBLE"}
_STRING_TYPES = {"CHAR", "VARCHAR", "STRING", "TEXT", "BINARY_VARCHAR"}


class QueryRejected(ValueError):
    """The query breaks an analysis rule (or is not valid SQL); the message says which and where."""


@dataclasses.dataclass(frozen=True)
class Parameter:
    """An analysis-template parameter: `:name` in the SQL, bound as a literal of `type`."""

    name: str
    type: str
    default: str | None = None


def _list(items) -> str:
    return "[" + ", ".join(items) + "]"


def _referenced_tables(tree: exp.Expression, configured: Mapping[str, ConfiguredTable]) -> set[str]:
    """The tables `tree` reads, each resolved in its own scope (a CTE is visible only where SQL says it is).

    A CTE may not take a configured table's name, nor a name another CTE has: then every reference to a
    configured table's name is that table, whatever the scope, and the checks below can follow CTEs by name."""
    functions = [t for t in tree.find_all(exp.Table) if not isinstance(t.this, exp.Identifier)]
    if functions:
        raise QueryRejected(f"Table functions are not allowed: {functions[0].sql(dialect=DIALECT)}")
    qualified = next((t for t in tree.find_all(exp.Table) if t.args.get("db") or t.args.get("catalog")), None)
    if qualified is not None:
        raise QueryRejected(f"Table {qualified.sql(dialect=DIALECT)}: refer to configured tables by name alone")
    ctes = [cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)]
    clash = next((n for n in ctes if n in configured or ctes.count(n) > 1), None)
    if clash is not None:
        raise QueryRejected(
            f"CTE name {clash} is {'a configured table' if clash in configured else 'defined twice'}; rename the CTE"
        )
    if any(w.args.get("recursive") for w in tree.find_all(exp.With)):
        raise QueryRejected("Recursive CTEs are not allowed")
    try:
        scoped = {
            source.name.lower()
            for scope in traverse_scope(tree)
            for source in scope.sources.values()
            if isinstance(source, exp.Table)
        }
    except SqlglotError as error:
        raise QueryRejected(f"cannot resolve the query's tables: {str(error).splitlines()[0]}") from None
    return scoped | {t.name.lower() for t in tree.find_all(exp.Table) if t.name.lower() not in ctes}


def _no_placeholders(tree: exp.Expression) -> exp.Expression:
    placeholder = tree.find(exp.Placeholder)
    if placeholder is not None:
        raise QueryRejected(f"parameter :{placeholder.name} can only be bound in an analysis template")
    return tree


def _bind(tree: exp.Expression, declared: tuple[Parameter, ...], given: Mapping[str, str]) -> exp.Expression:
    by_name = {p.name: p for p in declared}
    undeclared = sorted(set(given) - set(by_name))
    if undeclared:
        raise QueryRejected(f"parameter(s) {_list(undeclared)} are not declared by the analysis template")

    def literal(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Placeholder):
            return node
        parameter = by_name.get(node.name)
        if parameter is None:
            raise QueryRejected(f"parameter :{node.name} is used but not declared by the analysis template")
        value = given.get(node.name, parameter.default)
        if value is None:
            raise QueryRejected(f"parameter :{node.name} has no value and no default")
        kind = parameter.type.upper()
        try:
            if kind in _STRING_TYPES:
                return exp.Literal.string(value)
            if kind in _INTEGER_TYPES:
                return exp.Literal.number(int(value))
            if kind in _NUMBER_TYPES:
                if not math.isfinite(float(value)):
                    raise ValueError(value)
                return exp.Literal.number(repr(float(value)))
            if kind == "BOOLEAN":
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return exp.Boolean(this=value.lower() == "true")
        except ValueError:
            raise QueryRejected(f"parameter :{node.name} expects {kind}, not {value!r}") from None
        return exp.cast(exp.Literal.string(value), kind.replace("_", " "))  # dates and times: the engine checks

    return tree.copy().transform(literal)


def _single_select(tree: exp.Expression, kind: str) -> exp.Select:
    if not isinstance(tree, exp.Select) or tree.args.get("with_"):
        raise QueryRejected(f"{kind} queries are a single SELECT: no CTEs or set operations")
    if len(list(tree.find_all(exp.Select))) > 1:
        raise QueryRejected(f"{kind} queries cannot contain subqueries")
    if tree.find(exp.Window):
        raise QueryRejected(f"{kind} queries cannot use window functions")
    if isinstance(tree.args.get("distinct"), exp.Distinct) and tree.args["distinct"].args.get("on"):
        raise QueryRejected(f"DISTINCT ON is not allowed in {kind.lower()} queries")
    return tree


@dataclasses.dataclass(frozen=True)
class _Source:
    alias: str
    table: ConfiguredTable


def _sources(select: exp.Select, tables: Mapping[str, ConfiguredTable]) -> dict[str, _Source]:
    nodes = [select.args["from_"].this] if select.args.get("from_") else []
    nodes += [j.this for j in select.args.get("joins") or []]
    sources = {}
    for node in nodes:
        if not isinstance(node, exp.Table):
            raise QueryRejected("FROM and JOIN take configured tables only")
        alias = node.alias_or_name.lower()
        sources[alias] = _Source(alias, tables[node.name.lower()])
    return sources


def _resolve(column: exp.Column, sources: Mapping[str, _Source]) -> tuple[_Source, str]:
    name = column.name.lower()
    if column.table:
        source = sources.get(column.table.lower())
        if source is None or name not in source.table.columns:
            raise QueryRejected(f"Column {column.sql()} does not exist")
        return source, name
    owners = [s for s in sources.values() if name in s.table.columns]
    if len(owners) != 1:
        raise QueryRejected(f"Column {name} is {'ambiguous' if owners else 'not found'}")
    return owners[0], name


def _conditions(node: exp.Expression, operators: set[str]) -> list[exp.Expression]:
    """The leaves of an AND/OR tree; the connectives used are added to `operators`."""
    if isinstance(node, exp.Paren):
        return _conditions(node.this, operators)
    if isinstance(node, (exp.And, exp.Or)):
        operators.add("AND" if isinstance(node, exp.And) else "OR")
        return _conditions(node.this, operators) + _conditions(node.expression, operators)
    return [node]


def _check_joins(select: exp.Select, sources: Mapping[str, _Source]) -> list[tuple[str, str]]:
    """Only INNER JOIN ... ON equalities of join columns, with connectives every table involved allows."""
    edges = []
    for join in select.args.get("joins") or []:
        if join.side or join.args.get("kind") not in (None, "", "INNER") or join.args.get("using"):
            raise QueryRejected("Only INNER JOIN is allowed")
        if not join.args.get("on"):
            raise QueryRejected("Only INNER JOIN with an ON condition is allowed (no comma or cross joins)")
        operators: set[str] = set()
        involved = []
        for leaf in _conditions(join.args["on"], operators):
            if not (
                isinstance(leaf, exp.EQ)
                and isinstance(leaf.this, exp.Column)
                and isinstance(leaf.expression, exp.Column)
            ):
                raise QueryRejected(
                    f"Join condition {leaf.sql(dialect=DIALECT)} must compare two columns with = "
                    "(no functions or literals)"
                )
            (left, a), (right, b) = _resolve(leaf.this, sources), _resolve(leaf.expression, sources)
            if left.alias == right.alias:
                raise QueryRejected(f"Join condition {leaf.sql(dialect=DIALECT)} must compare columns of two tables")
            bad = [f"{s.table.name}.{c}" for s, c in ((left, a), (right, b)) if c not in s.table.rule.join_columns]
            if bad:
                raise QueryRejected(f"Column(s) {_list(bad)} are not join columns")
            involved += [left, right]
            edges.append((left.alias, right.alias))
        for source in involved:
            refused = sorted(operators - source.table.rule.join_operators)
            if refused:
                raise QueryRejected(f"Join operator {refused[0]} is not allowed for table {source.table.name}")
    return edges


def _check_runner_join(sources: Mapping[str, _Source], edges: list[tuple[str, str]], runner: str) -> None:
    reached = {a for a, s in sources.items() if s.table.owner == runner}
    frontier = list(reached)
    while frontier:
        here = frontier.pop()
        for a, b in edges:
            for there in (b,) if a == here else (a,) if b == here else ():
                if there not in reached:
                    reached.add(there)
                    frontier.append(there)
    for alias, source in sources.items():
        rule = source.table.rule
        needs = isinstance(rule, ListRule) or (isinstance(rule, AggregationRule) and rule.join_required)
        if needs and alias not in reached:
            raise QueryRejected(f"Inner join to query runner table required for table {source.table.name}")


def _columns_outside(node: exp.Expression | None, skip: tuple[type, ...]) -> list[exp.Column]:
    if node is None:
        return []
    return [c for c in node.find_all(exp.Column) if not any(c.find_ancestor(t) for t in skip)]


def _clauses(select: exp.Select) -> list[tuple[str, exp.Expression | None]]:
    return [
        ("select", exp.Tuple(expressions=select.expressions)),
        ("where", select.args.get("where")),
        ("group by", select.args.get("group")),
        ("having", select.args.get("having")),
        ("order by", select.args.get("order")),
    ]


def _with_hidden_counts(select: exp.Select, counts: list[tuple[exp.Column, int]]) -> str:
    """`select` in DuckDB SQL, keeping only rows with at least `m` distinct values of each column.

    The counts are hidden columns of the grouped query, filtered outside it; ORDER BY and LIMIT move
    outside too, so they apply to the rows that remain, in order."""
    if not counts:
        return select.sql(dialect="duckdb")
    inner = select.copy()
    order, limit = inner.args.get("order"), inner.args.get("limit")
    inner.set("order", None)
    inner.set("limit", None)
    hidden = []
    for i, (column, _) in enumerate(counts):
        hidden.append(f"__aa_distinct_{i}")
        inner.append("expressions", exp.alias_(exp.Count(this=exp.Distinct(expressions=[column.copy()])), hidden[-1]))
    outer_order = []
    for i, ordered in enumerate(order.expressions if order else []):
        key = ordered.this
        position = next(
            (
                n + 1
                for n, item in enumerate(select.expressions)
                if item.unalias().sql() == key.sql()
                or (
                    isinstance(key, exp.Column)
                    and not key.table
                    and isinstance(item, exp.Alias)
                    and item.alias == key.name
                )
            ),
            None,
        )
        if isinstance(key, exp.Literal) and key.is_int:
            position = int(key.name)
        if position is None:  # a sort key that is not an output column: carry it hidden
            hidden.append(f"__aa_order_{i}")
            inner.append("expressions", exp.alias_(key.copy(), hidden[-1]))
            target = exp.column(hidden[-1])
        else:
            target = exp.Literal.number(position)
        moved = ordered.copy()
        moved.set("this", target)
        outer_order.append(moved)
    keep = " AND ".join(f"__aa_distinct_{i} >= {m}" for i, (_, m) in enumerate(counts))
    sql = f"SELECT * EXCLUDE ({', '.join(hidden)}) FROM ({inner.sql(dialect='duckdb')}) AS __aa_q WHERE {keep}"
    if outer_order:
        sql += " ORDER BY " + ", ".join(o.sql(dialect="duckdb") for o in outer_order)
    if limit is not None:
        sql += " " + limit.sql(dialect="duckdb")
    return sql


def _functions(node: exp.Expression):
    """Function calls under `node` (sqlglot models AND and OR as functions too; they are not calls)."""
    return (f for f in node.find_all(exp.Func) if not isinstance(f, exp.Connector))
