"""CUSTOM rules: an allowed analysis template (or ANY_QUERY for an allowed provider) that never
outputs a disallowed column, traced through subqueries and CTEs; aggregation thresholds as hidden counts."""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage
from sqlglot.optimizer.qualify import qualify

from audience_assets.core.cleanroom.admission.common import DIALECT, QueryRejected, _list, _with_hidden_counts
from audience_assets.core.cleanroom.rules import ANY_QUERY, ConfiguredTable, CustomRule


def _admit_custom(
    tree: exp.Query, tables: Mapping[str, ConfiguredTable], *, runner: str, template_arn: str | None
) -> str:
    for table in tables.values():
        rule: CustomRule = table.rule
        if template_arn:
            if template_arn not in rule.allowed_analyses:
                raise QueryRejected(
                    f"Analysis template {template_arn} is not allowed by the analysis rule of table {table.name}"
                )
        elif ANY_QUERY not in rule.allowed_analyses or runner not in rule.allowed_providers:
            raise QueryRejected(
                f"Table {table.name} allows only its approved analysis templates; "
                f"account {runner} cannot run its own query on it"
            )
    schema = {t.name: {c: "VARCHAR" for c in t.columns} for t in tables.values()}
    try:
        qualified = qualify(tree.copy(), schema=schema, dialect=DIALECT, validate_qualify_columns=True)
    except SqlglotError as error:
        raise QueryRejected(str(error).splitlines()[0]) from None
    untraceable = next(
        (
            n
            for n in qualified.find_all(exp.TableColumn, exp.Columns, exp.Star)
            if not (isinstance(n, exp.Star) and isinstance(n.parent, exp.Count))
        ),
        None,
    )
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
                raise QueryRejected(
                    f"Only columns are allowed as arguments of aggregate functions "
                    f"(allowedAggregateExpressionType COLUMNS_ONLY): {aggregate.sql(dialect=DIALECT)}"
                )
    if not isinstance(tree, exp.Select) or not (
        tree.args.get("group") or any(e.find(exp.AggFunc) for e in tree.expressions)
    ):
        table, column = next(iter(thresholds))
        raise QueryRejected(
            f"Table {table} requires at least {thresholds[(table, column)]} distinct {column} values "
            "per output row: aggregate in the outermost SELECT"
        )
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
            raise QueryRejected(
                f"Table {table} has an aggregation threshold: read it only as a FROM item of the "
                "outermost SELECT, not in a subquery expression"
            )
        for item in items:
            reads = _reads(item, table, ctes)
            if not reads:
                continue
            if reads > 1:
                raise QueryRejected(
                    f"Table {table} has an aggregation threshold: {item.alias_or_name} reads it "
                    f"{reads} times; join each read in the outermost SELECT instead"
                )
            identity = _identity(item, table, column, ctes)
            if identity is None:
                raise QueryRejected(
                    f"Table {table} requires at least {minimum} distinct {column} values per output "
                    f"row: {item.alias_or_name} must pass {table}.{column} through unchanged"
                )
            counts.append((identity, minimum))
    return counts


def _reads(
    node: exp.Expression, table: str, ctes: Mapping[str, exp.Expression], skip: list[exp.Expression] = ()
) -> int:
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
    node = (
        next((n for n in nodes if n.alias_or_name == inner.table), None)
        if inner.table
        else (nodes[0] if len(nodes) == 1 else None)
    )
    if isinstance(node, exp.Table) and node.name.lower() not in ctes:
        return node.name.lower(), inner.name.lower()
    body = node.this if isinstance(node, exp.Subquery) else ctes.get(node.name.lower()) if node is not None else None
    if isinstance(body, exp.Query) and inner.name in body.named_selects:
        return _source_of(body, body.named_selects.index(inner.name), ctes)
    return None
