"""Admitting one protected query: parsed, checked against the rule of every table it reads (one
rule type per query), and rewritten for DuckDB by the module of that rule type."""

from __future__ import annotations

from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from audience_assets.core.cleanroom.admission.aggregation import _admit_aggregation
from audience_assets.core.cleanroom.admission.common import (
    DIALECT,
    MAX_QUERY_CHARS,
    MAX_TABLES,
    Parameter,
    QueryRejected,
    _bind,
    _check_joins,
    _check_runner_join,
    _list,
    _no_placeholders,
    _referenced_tables,
    _single_select,
    _sources,
    dialect,
)
from audience_assets.core.cleanroom.admission.custom import _admit_custom
from audience_assets.core.cleanroom.admission.list_rule import _admit_list
from audience_assets.core.cleanroom.rules import ConfiguredTable


def admit(
    sql: str,
    tables: Mapping[str, ConfiguredTable],
    *,
    runner: str,
    template_arn: str | None = None,
    parameters: Mapping[str, str] | None = None,
    declared: tuple[Parameter, ...] = (),
) -> str:
    """The DuckDB SQL to run for `sql`, sent by account `runner`, or `QueryRejected`.

    `template_arn` is set when `sql` is an analysis template's text; its `declared` parameters are then
    bound from `parameters` (falling back to their defaults) as typed literals, never spliced as text.
    """
    try:
        return _admit(sql, tables, runner=runner, template_arn=template_arn, parameters=parameters, declared=declared)
    except RecursionError:  # the parser and the checks walk the tree recursively
        raise QueryRejected("the query nests too deeply to be checked") from None


def _admit(
    sql: str,
    tables: Mapping[str, ConfiguredTable],
    *,
    runner: str,
    template_arn: str | None,
    parameters: Mapping[str, str] | None,
    declared: tuple[Parameter, ...],
) -> str:
    if len(sql) > MAX_QUERY_CHARS:
        raise QueryRejected(f"query text is {len(sql)} characters; the limit is {MAX_QUERY_CHARS}")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect(tables)) if s is not None]
    except SqlglotError as error:
        raise QueryRejected(f"Syntax error: {str(error).splitlines()[0]}") from None
    if len(statements) != 1:
        raise QueryRejected(f"a protected query is exactly one SQL statement, not {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Query) or tree.find(exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop):
        raise QueryRejected("Only SELECT statements are allowed")
    # `t(x, y)` renames a table's columns by position, which the checks (following names) would not see
    renamed = next(
        (
            a
            for a in tree.find_all(exp.TableAlias)
            if a.columns
            and not (
                isinstance(a.parent, exp.Unnest)
                or isinstance(a.parent, exp.Subquery)
                and isinstance(a.parent.this, exp.Values)
            )
        ),
        None,
    )
    if renamed is not None:
        raise QueryRejected(
            f"Column aliases in {renamed.sql(dialect=DIALECT)} are not allowed: rename columns with AS in a SELECT list"
        )
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
