"""Admission of a protected query: check the SQL against the rule of every table it reads, then rewrite it
for DuckDB with the rules' output controls built in.

The checks follow reference/cleanrooms.md §1 and §5: LIST and AGGREGATION queries must fit their
grammars (one SELECT, INNER JOINs on join columns, the query runner's table joined in); CUSTOM queries
must be an allowed analysis template (or `ANY_QUERY` for an allowed provider) and never output a
disallowed column. Output constraints and aggregation thresholds become hidden `COUNT(DISTINCT ...)`
columns that drop small rows silently, as the service does. Where the service's behaviour is not
documented, this engine refuses rather than guesses: a query it cannot prove compliant is rejected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

from audience_assets.core.cleanroom.rules import ANY_QUERY, AggregationRule, ConfiguredTable, CustomRule, ListRule

DIALECT = "redshift"  # the Clean Rooms SQL grammar: accepts `SELECT TOP n DISTINCT` and `:name` parameters
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


def admit(sql: str, tables: Mapping[str, ConfiguredTable], *, runner: str, template_arn: str | None = None,
          parameters: Mapping[str, str] | None = None, declared: tuple[Parameter, ...] = ()) -> str:
    """The DuckDB SQL to run for `sql`, sent by account `runner`, or `QueryRejected`.

    `template_arn` is set when `sql` is an analysis template's text; its `declared` parameters are then
    bound from `parameters` (falling back to their defaults) as typed literals, never spliced as text.
    """
    try:
        return _admit(sql, tables, runner=runner, template_arn=template_arn, parameters=parameters, declared=declared)
    except RecursionError:  # the parser and the checks walk the tree recursively
        raise QueryRejected("the query nests too deeply to be checked") from None


def _admit(sql: str, tables: Mapping[str, ConfiguredTable], *, runner: str, template_arn: str | None,
           parameters: Mapping[str, str] | None, declared: tuple[Parameter, ...]) -> str:
    if len(sql) > MAX_QUERY_CHARS:
        raise QueryRejected(f"query text is {len(sql)} characters; the limit is {MAX_QUERY_CHARS}")
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except SqlglotError as error:
        raise QueryRejected(f"Syntax error: {str(error).splitlines()[0]}") from None
    if len(statements) != 1:
        raise QueryRejected(f"a protected query is exactly one SQL statement, not {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Query) or tree.find(exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop):
        raise QueryRejected("Only SELECT statements are allowed")
    # `t(x, y)` renames a table's columns by position, which the checks (following names) would not see
    renamed = next((a for a in tree.find_all(exp.TableAlias) if a.columns and not (
        isinstance(a.parent, exp.Unnest) or isinstance(a.parent, exp.Subquery) and isinstance(a.parent.this, exp.Values))), None)
    if renamed is not None:
        raise QueryRejected(f"Column aliases in {renamed.sql(dialect=DIALECT)} are not allowed: rename columns with AS "
                            "in a SELECT list")
    tree = _bind(tree, declared, parameters or {}) if template_arn else _no_placeholders(tree)
    names = _referenced_tables(tree, tables)
    unknown = sorted(n for n in names if n not in tables)
    if unknown:
        raise QueryRejected(f"Table(s) {_list(unknown)} are not associated with the collaboration")
    if len(names) > MAX_TABLES:
        raise QueryRejected(f"a query may reference at most {MAX_TABLES} configured tables, not {len(names)}")
    used = {n: tables[n] for n in sorted(names)}
    kinds = sorted({t.rule.kind for t in used.values()})
    if len(kinds) != 1:
        raise QueryRejected(f"All tables in a query must have the same analysis rule type; found {', '.join(kinds)}")
    if kinds[0] == "CUSTOM":
        return _admit_custom(tree, used, runner=runner, template_arn=template_arn)
    if template_arn:
        raise QueryRejected(f"analysis templates run only on tables with a CUSTOM analysis rule, not {kinds[0]}")
    select = _single_select(tree, kinds[0])
    sources = _sources(select, used)
    edges = _check_joins(select, sources)
    _check_runner_join(sources, edges, runner)
    if kinds[0] == "LIST":
        return _admit_list(select, sources)
    return _admit_aggregation(select, sources)


# ---------------------------------------------------------------------------- shared

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
        raise QueryRejected(f"CTE name {clash} is {'a configured table' if clash in configured else 'defined twice'}; "
                            "rename the CTE")
    if any(w.args.get("recursive") for w in tree.find_all(exp.With)):
        raise QueryRejected("Recursive CTEs are not allowed")
    try:
        scoped = {source.name.lower() for scope in traverse_scope(tree) for source in scope.sources.values()
                  if isinstance(source, exp.Table)}
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
            if not (isinstance(leaf, exp.EQ) and isinstance(leaf.this, exp.Column)
                    and isinstance(leaf.expression, exp.Column)):
                raise QueryRejected(f"Join condition {leaf.sql(dialect=DIALECT)} must compare two columns with = "
                                    "(no functions or literals)")
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
            for there in ((b,) if a == here else (a,) if b == here else ()):
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
    return [("select", exp.Tuple(expressions=select.expressions)), ("where", select.args.get("where")),
            ("group by", select.args.get("group")), ("having", select.args.get("having")),
            ("order by", select.args.get("order"))]


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
        position = next((n + 1 for n, item in enumerate(select.expressions)
                         if item.unalias().sql() == key.sql() or (isinstance(key, exp.Column) and not key.table
                                                                  and isinstance(item, exp.Alias) and item.alias == key.name)),
                        None)
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


# ---------------------------------------------------------------------------- LIST

def _admit_list(select: exp.Select, sources: Mapping[str, _Source]) -> str:
    if not select.args.get("distinct"):
        raise QueryRejected("List queries must use SELECT DISTINCT")
    for key, clause in (("group", "GROUP BY"), ("having", "HAVING"), ("order", "ORDER BY"), ("offset", "OFFSET"),
                        ("qualify", "QUALIFY")):
        if select.args.get(key):
            raise QueryRejected(f"{clause} is not allowed in list queries")
    function = next(_functions(select), None)
    if function is not None:
        raise QueryRejected(f"Functions are not allowed in list queries: {function.sql(dialect=DIALECT)}")
    limit = select.args.get("limit")
    if limit is not None and not (isinstance(limit.expression, exp.Literal) and limit.expression.is_int
                                  and int(limit.expression.name) > 0):
        raise QueryRejected("LIMIT takes a positive integer")
    if select.find(exp.Star):
        raise QueryRejected("SELECT * is not allowed in list queries; name the list columns")
    for clause, node in (("select", exp.Tuple(expressions=select.expressions)), ("where", select.args.get("where"))):
        refused = [name for s, name in (_resolve(c, sources) for c in _columns_outside(node, ()))
                   if name not in s.table.rule.list_columns]
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


# ---------------------------------------------------------------------------- AGGREGATION

_AGGREGATES = {exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG"}


def _functions(node: exp.Expression):
    """Function calls under `node` (sqlglot models AND and OR as functions too; they are not calls)."""
    return (f for f in node.find_all(exp.Func) if not isinstance(f, exp.Connector))


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.upper()
    return type(node).sql_names()[0] if type(node).sql_names() else type(node).__name__.upper()


def _admit_aggregation(select: exp.Select, sources: Mapping[str, _Source]) -> str:
    if select.args.get("limit") or select.args.get("offset"):
        raise QueryRejected("LIMIT, TOP and OFFSET are not allowed in aggregation queries")
    if select.find(exp.Star) and not all(isinstance(s.parent, exp.Count) for s in select.find_all(exp.Star)):
        raise QueryRejected("SELECT * is not allowed in aggregation queries")
    for clause in ("where", "group"):
        node = select.args.get(clause)
        if node is not None and node.find(exp.AggFunc):
            raise QueryRejected(f"Aggregate functions are not allowed in {'GROUP BY' if clause == 'group' else 'WHERE'}")
    aggregates = list(select.find_all(exp.AggFunc))
    for aggregate in aggregates:
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
            raise QueryRejected(f"Only columns are allowed as arguments of aggregate functions: "
                                f"{aggregate.sql(dialect=DIALECT)}")
        source, column = _resolve(argument, sources)
        function = f"{kind}_DISTINCT" if distinct else kind
        if function not in source.table.rule.aggregate_columns.get(column, ()):
            raise QueryRejected(f"Aggregate function {function} is not allowed on column {source.table.name}.{column}")
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
    for function in _functions(select):
        if isinstance(function, exp.AggFunc) or function.find_ancestor(exp.AggFunc):
            continue
        name = _function_name(function)
        applied_to = [_resolve(c, sources)[0].table for c in function.find_all(exp.Column)] or [
            s.table for s in sources.values()]
        refusing = sorted({t.name for t in applied_to if name not in t.rule.scalar_functions})
        if refusing:
            raise QueryRejected(f"Function {name} is not allowed for table {refusing[0]}")
    grouped = {g.sql(dialect=DIALECT).lower() for g in (select.args["group"].expressions if select.args.get("group") else [])}
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
    # every copy of a table (a self-join) meets its constraints on its own
    counts = [(exp.column(column, table=alias), minimum) for alias, source in sources.items()
              for column, minimum in source.table.rule.output_constraints.items()]
    return _with_hidden_counts(select, counts)


# ---------------------------------------------------------------------------- CUSTOM

def _admit_custom(tree: exp.Query, tables: Mapping[str, ConfiguredTable], *, runner: str,
                  template_arn: str | None) -> str:
    for table in tables.values():
        rule: CustomRule = table.rule
        if template_arn:
            if template_arn not in rule.allowed_analyses:
                raise QueryRejected(f"Analysis template {template_arn} is not allowed by the analysis rule of table "
                                    f"{table.name}")
        elif ANY_QUERY not in rule.allowed_analyses or runner not in rule.allowed_providers:
            raise QueryRejected(f"Table {table.name} allows only its approved analysis templates; "
                                f"account {runner} cannot run its own query on it")
    schema = {t.name: {c: "VARCHAR" for c in t.columns} for t in tables.values()}
    try:
        qualified = qualify(tree.copy(), schema=schema, dialect=DIALECT, validate_qualify_columns=True)
    except SqlglotError as error:
        raise QueryRejected(str(error).splitlines()[0]) from None
    untraceable = next((n for n in qualified.find_all(exp.TableColumn, exp.Columns, exp.Star)
                        if not (isinstance(n, exp.Star) and isinstance(n.parent, exp.Count))), None)
    if untraceable is not None:  # a whole row (`SELECT t FROM custom t`), COLUMNS(...), an unexpanded *
        raise QueryRejected(f"{untraceable.sql(dialect=DIALECT)} is not allowed: name the columns to output")
    _check_disallowed_outputs(qualified, tables, schema)
    thresholds = {(t.name, c): m for t in tables.values() for c, m in t.rule.thresholds.items()}
    if not thresholds:
        return tree.sql(dialect="duckdb")
    if tree.find(exp.Window):  # a window reads other rows, including the rows the threshold drops
        raise QueryRejected("Window functions are not allowed on tables with aggregation thresholds")
    if not all(t.rule.any_aggregate_expression for t in tables.values() if t.rule.thresholds):
        for aggregate in tree.find_all(exp.AggFunc):
            argument = aggregate.this
            if isinstance(argument, exp.Distinct) and len(argument.expressions) == 1:
                argument = argument.expressions[0]
            if not isinstance(argument, (exp.Column, exp.Star, exp.Literal)):
                raise QueryRejected(f"Only columns are allowed as arguments of aggregate functions "
                                    f"(allowedAggregateExpressionType COLUMNS_ONLY): {aggregate.sql(dialect=DIALECT)}")
    if not isinstance(tree, exp.Select) or not (tree.args.get("group") or any(
            e.find(exp.AggFunc) for e in tree.expressions)):
        table, column = next(iter(thresholds))
        raise QueryRejected(f"Table {table} requires at least {thresholds[(table, column)]} distinct {column} values "
                            "per output row: aggregate in the outermost SELECT")
    return _with_hidden_counts(tree, _threshold_counts(tree, thresholds))


def _threshold_counts(select: exp.Select, thresholds: Mapping[tuple[str, str], int]) -> list[tuple[exp.Column, int]]:
    """The hidden distinct counts that enforce `thresholds`: one per read of a thresholded table, so each copy
    of a self-joined table meets the minimum on its own. Every read must be a FROM item of the outermost
    SELECT (directly, or once inside a subquery or CTE that passes the identity column through unchanged);
    a read anywhere else (a scalar or IN subquery, twice inside one subquery) could carry one identity's
    values into a row that many identities make large enough."""
    ctes = {c.alias_or_name.lower(): c.this for c in select.find_all(exp.CTE)}
    items = _from_nodes(select)
    counts = []
    for (table, column), minimum in thresholds.items():
        elsewhere = _reads(select, table, ctes, skip=items)
        if elsewhere:
            raise QueryRejected(f"Table {table} has an aggregation threshold: read it only as a FROM item of the "
                                "outermost SELECT, not in a subquery expression")
        for item in items:
            reads = _reads(item, table, ctes)
            if not reads:
                continue
            if reads > 1:
                raise QueryRejected(f"Table {table} has an aggregation threshold: {item.alias_or_name} reads it "
                                    f"{reads} times; join each read in the outermost SELECT instead")
            identity = _identity(item, table, column, ctes)
            if identity is None:
                raise QueryRejected(f"Table {table} requires at least {minimum} distinct {column} values per output "
                                    f"row: {item.alias_or_name} must pass {table}.{column} through unchanged")
            counts.append((identity, minimum))
    return counts


def _reads(node: exp.Expression, table: str, ctes: Mapping[str, exp.Expression],
           skip: list[exp.Expression] = ()) -> int:
    """How many times one row of `node` can draw on `table`: its references, CTEs followed (but not
    their definitions, nor the `skip` subtrees); a set operation's rows come from one branch each."""
    if isinstance(node, exp.Subquery):
        return _reads(node.this, table, ctes, skip)
    if isinstance(node, exp.SetOperation):
        return max(_reads(node.this, table, ctes, skip), _reads(node.expression, table, ctes, skip))
    skipped = {id(n) for n in skip}
    total = 0
    for found in node.walk(prune=lambda n: isinstance(n, exp.With) or id(n) in skipped):
        if isinstance(found, exp.Table) and id(found) not in skipped:
            name = found.name.lower()
            total += 1 if name == table else _reads(ctes[name], table, ctes) if name in ctes else 0
    return total


def _identity(item: exp.Expression, table: str, column: str, ctes: Mapping[str, exp.Expression]) -> exp.Column | None:
    """The column of FROM item `item` that holds `table.column` unchanged, or None."""
    alias = item.alias_or_name
    if isinstance(item, exp.Table) and item.name.lower() == table:
        return exp.column(column, table=alias)
    body = item.this if isinstance(item, exp.Subquery) else ctes.get(item.name.lower())
    if isinstance(body, exp.Query):
        for position, name in enumerate(body.named_selects):
            if _source_of(body, position, ctes) == (table, column):
                return exp.column(name, table=alias)
    return None


def _check_disallowed_outputs(qualified: exp.Query, tables: Mapping[str, ConfiguredTable], schema: dict) -> None:
    """Reject a query whose output carries a disallowed column's values, directly or through subqueries and CTEs.
    Values only counted (`COUNT(DISTINCT hashed_email)`) are not carried."""
    disallowed = {(t.name, c) for t in tables.values() for c in t.rule.disallowed_output_columns}
    if not disallowed:
        return
    carried = []

    def walk(node) -> None:
        if isinstance(node.expression, exp.Table):
            key = (node.expression.name.lower(), node.name.split(".")[-1].strip('"').lower())
            if key in disallowed:
                carried.append(f"{key[0]}.{key[1]}")
            return
        columns = list(node.expression.find_all(exp.Column))
        if columns and all(_aggregated(c) for c in columns):
            return  # every value read here is folded into an aggregate
        for child in node.downstream:
            walk(child)

    for name in qualified.named_selects:
        try:
            walk(lineage(name, qualified, schema=schema, dialect=DIALECT))
        except SqlglotError as error:
            raise QueryRejected(f"cannot trace output column {name}: {str(error).splitlines()[0]}") from None
    if carried:
        raise QueryRejected(f"Column(s) {_list(dict.fromkeys(carried))} is not allowed in output")


def _aggregated(column: exp.Column) -> bool:
    """Whether `column` is only counted. COUNT hides values; MAX, MIN, SUM, LISTAGG and the like return them
    (one row in a group suffices)."""
    aggregate = column.find_ancestor(exp.AggFunc)
    return isinstance(aggregate, exp.Count) and aggregate.find_ancestor(exp.Window) is None


def _from_nodes(select: exp.Select) -> list[exp.Expression]:
    nodes = [select.args["from_"].this] if select.args.get("from_") else []
    return nodes + [j.this for j in select.args.get("joins") or []]


def _source_of(query: exp.Expression, position: int, ctes: dict) -> tuple[str, str] | None:
    """The (table, column) that output `position` of `query` copies unchanged (in every UNION branch), or None."""
    if isinstance(query, exp.SetOperation):
        left, right = _source_of(query.this, position, ctes), _source_of(query.expression, position, ctes)
        return left if left == right else None
    if not isinstance(query, exp.Select) or position >= len(query.expressions):
        return None
    inner = query.expressions[position].unalias()
    if not isinstance(inner, exp.Column):
        return None
    nodes = _from_nodes(query)
    node = next((n for n in nodes if n.alias_or_name == inner.table), None) if inner.table else (
        nodes[0] if len(nodes) == 1 else None)
    if isinstance(node, exp.Table) and node.name.lower() not in ctes:
        return node.name.lower(), inner.name.lower()
    body = node.this if isinstance(node, exp.Subquery) else ctes.get(node.name.lower()) if node is not None else None
    if isinstance(body, exp.Query) and inner.name in body.named_selects:
        return _source_of(body, body.named_selects.index(inner.name), ctes)
    return None
