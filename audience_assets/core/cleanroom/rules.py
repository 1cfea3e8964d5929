"""Configured tables and their analysis rules, in the shape AWS Clean Rooms uses (`policy.v1`).

A rule is given as the body of `GetSchemaAnalysisRule`'s policy: `{"list": {...}}`,
`{"aggregation": {...}}` or `{"custom": {...}}`, so a real collaboration's rules can be mirrored into
the local engine verbatim. Definitions are checked as `CreateConfiguredTableAnalysisRule` would check
them (AWS Clean Rooms' `ConfiguredTableAnalysisRulePolicyV1` reference); a bad definition raises `AnalysisRuleInvalid`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMN_PATTERN = re.compile(r"^[a-z0-9_](([a-z0-9_ ]+-)*([a-z0-9_ ]+))?$")
AGGREGATE_FUNCTIONS = frozenset({"SUM", "SUM_DISTINCT", "COUNT", "COUNT_DISTINCT", "AVG"})
SCALAR_FUNCTIONS = frozenset(
    {
        "ABS",
        "CAST",
        "CEILING",
        "COALESCE",
        "CONVERT",
        "CURRENT_DATE",
        "DATEADD",
        "EXTRACT",
        "FLOOR",
        "GETDATE",
        "LN",
        "LOG",
        "LOWER",
        "ROUND",
        "RTRIM",
        "SQRT",
        "SUBSTRING",
        "TO_CHAR",
        "TO_DATE",
        "TO_NUMBER",
        "TO_TIMESTAMP",
        "TRIM",
        "TRUNC",
        "UPPER",
    }
)
ANY_QUERY = "ANY_QUERY"


class AnalysisRuleInvalid(ValueError):
    """A rule definition the service would refuse (ValidationException on CreateConfiguredTableAnalysisRule)."""


@dataclasses.dataclass(frozen=True)
class ListRule:
    join_columns: frozenset[str]
    list_columns: frozenset[str]
    join_operators: frozenset[str]
    kind = "LIST"


@dataclasses.dataclass(frozen=True)
class AggregationRule:
    aggregate_columns: Mapping[str, frozenset[str]]  # column -> functions it may be aggregated with
    join_columns: frozenset[str]
    dimension_columns: frozenset[str]
    scalar_functions: frozenset[str]
    output_constraints: Mapping[str, int]  # column -> minimum COUNT_DISTINCT per output row
    join_required: bool
    join_operators: frozenset[str]
    kind = "AGGREGATION"


@dataclasses.dataclass(frozen=True)
class CustomRule:
    allowed_analyses: frozenset[str]  # analysis-template ARNs, or ANY_QUERY
    allowed_providers: frozenset[str]  # accounts that may send their own SQL (with ANY_QUERY)
    disallowed_output_columns: frozenset[str]
    thresholds: Mapping[str, int]  # identity column -> minimum distinct identities per output row
    any_aggregate_expression: bool  # allowedAggregateExpressionType ANY_EXPRESSION (else COLUMNS_ONLY)
    kind = "CUSTOM"


AnalysisRule = ListRule | AggregationRule | CustomRule


@dataclasses.dataclass(frozen=True)
class ConfiguredTable:
    """A configured table as associated with the collaboration: `name` is the association name used in SQL."""

    name: str
    path: Path  # Parquet file (or folder of Parquet files) holding the rows
    columns: tuple[str, ...]
    rule: AnalysisRule
    owner: str  # account id of the member that associated the table


def _strings(policy: Mapping[str, Any], key: str, *, required: bool = True) -> list[str]:
    value = policy.get(key)
    if value is None:
        if required:
            raise AnalysisRuleInvalid(f"{key} is required")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AnalysisRuleInvalid(f"{key} must be a list of strings")
    return value


def _operators(policy: Mapping[str, Any]) -> frozenset[str]:
    operators = _strings(policy, "allowedJoinOperators", required=False)
    if len(operators) > 2 or set(operators) - {"AND", "OR"}:
        raise AnalysisRuleInvalid(f"allowedJoinOperators must hold at most AND and OR, not {operators}")
    return frozenset(operators or ["AND"])  # unset means AND only


def _minimum(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= 100_000:
        raise AnalysisRuleInvalid(f"{what} must be an integer from 2 to 100000, not {value!r}")
    return value


def rule_from_policy(policy: Mapping[str, Any], columns: Sequence[str]) -> AnalysisRule:
    """The rule of a table whose allowed columns are `columns`, from a `policy.v1` body."""
    bad_names = [c for c in columns if not COLUMN_PATTERN.match(c)]
    if bad_names:
        raise AnalysisRuleInvalid(f"column name(s) {bad_names} do not match {COLUMN_PATTERN.pattern}")
    if not isinstance(policy, Mapping) or len(policy) != 1:
        raise AnalysisRuleInvalid("a policy holds exactly one of list, aggregation or custom")
    ((kind, body),) = policy.items()
    if not isinstance(body, Mapping):
        raise AnalysisRuleInvalid(f"{kind} must be a mapping")
    parse = _PARSERS.get(kind)
    if parse is None:
        raise AnalysisRuleInvalid(f"unknown analysis rule type {kind!r}; use list, aggregation or custom")
    return parse(body, frozenset(columns))


def _known(names: Sequence[str], field: str, allowed: frozenset[str]) -> frozenset[str]:
    """`names` as a set, refused if a rule names a column the table does not allow (the service refuses it)."""
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise AnalysisRuleInvalid(f"{field} names column(s) {unknown} that are not among the table's allowed columns")
    return frozenset(names)


def _list_rule(body: Mapping[str, Any], allowed: frozenset[str]) -> ListRule:
    """A list rule: join columns to match on, list columns to return, never the same column as both."""
    join = _known(_strings(body, "joinColumns"), "joinColumns", allowed)
    listed = _known(_strings(body, "listColumns"), "listColumns", allowed)
    if not join:
        raise AnalysisRuleInvalid("joinColumns needs at least one column")
    if join & listed:
        raise AnalysisRuleInvalid(f"column(s) {sorted(join & listed)} cannot be both join and list columns")
    return ListRule(join, listed, _operators(body))


def _aggregation_rule(body: Mapping[str, Any], allowed: frozenset[str]) -> AggregationRule:
    """An aggregation rule, its parts checked in a fixed order: a definition with several faults names the same one."""
    aggregates = _aggregate_columns(body, allowed)
    join = _known(_strings(body, "joinColumns"), "joinColumns", allowed)
    dimensions = _known(_strings(body, "dimensionColumns"), "dimensionColumns", allowed)
    if dimensions & (join | set(aggregates)):
        raise AnalysisRuleInvalid(
            f"dimension column(s) {sorted(dimensions & (join | set(aggregates)))} "
            "cannot also be join or aggregate columns"
        )
    scalars = set(_strings(body, "scalarFunctions"))
    if scalars - SCALAR_FUNCTIONS:
        raise AnalysisRuleInvalid(f"scalar function(s) {sorted(scalars - SCALAR_FUNCTIONS)} are not supported")
    constraints = _output_constraints(body, allowed)
    join_required = body.get("joinRequired")
    if join_required not in (None, "QUERY_RUNNER"):
        raise AnalysisRuleInvalid(f"joinRequired must be QUERY_RUNNER, not {join_required!r}")
    return AggregationRule(
        aggregates,
        join,
        dimensions,
        frozenset(scalars),
        constraints,
        join_required == "QUERY_RUNNER",
        _operators(body),
    )


def _aggregate_columns(body: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, frozenset[str]]:
    """Column -> the functions it may be aggregated with: a column may appear in several entries."""
    aggregates: dict[str, set[str]] = {}
    for entry in body.get("aggregateColumns") or []:
        function = entry.get("function")
        if function not in AGGREGATE_FUNCTIONS:
            raise AnalysisRuleInvalid(f"aggregate function {function!r} is not one of {sorted(AGGREGATE_FUNCTIONS)}")
        for column in _known(_strings(entry, "columnNames"), "aggregateColumns", allowed):
            aggregates.setdefault(column, set()).add(function)
    if not aggregates:
        raise AnalysisRuleInvalid("aggregateColumns needs at least one entry")
    return {c: frozenset(f) for c, f in aggregates.items()}


def _output_constraints(body: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, int]:
    """Column -> minimum distinct count per output row; the strictest wins when a column is constrained twice."""
    constraints: dict[str, int] = {}
    for entry in body.get("outputConstraints") or []:
        if entry.get("type") != "COUNT_DISTINCT":
            raise AnalysisRuleInvalid("outputConstraints type must be COUNT_DISTINCT")
        column = entry.get("columnName")
        _known([column], "outputConstraints", allowed)
        constraints[column] = max(constraints.get(column, 0), _minimum(entry.get("minimum"), "minimum"))
    if not constraints:
        raise AnalysisRuleInvalid("outputConstraints needs at least one entry")
    return constraints


def _custom_rule(body: Mapping[str, Any], allowed: frozenset[str]) -> CustomRule:
    """A custom rule: which analyses (or ANY_QUERY from which providers) may run, and what they may return."""
    analyses = _strings(body, "allowedAnalyses")  # may be empty (the API's minimum is 0): nothing runs then
    providers = _strings(body, "allowedAnalysisProviders", required=False)
    if ANY_QUERY in analyses and not providers:
        raise AnalysisRuleInvalid("allowedAnalysisProviders is required when allowedAnalyses holds ANY_QUERY")
    thresholds, any_expression = _aggregation_thresholds(body, allowed)
    return CustomRule(
        frozenset(analyses),
        frozenset(providers),
        _known(_strings(body, "disallowedOutputColumns", required=False), "disallowedOutputColumns", allowed),
        thresholds,
        any_expression,
    )


def _aggregation_thresholds(body: Mapping[str, Any], allowed: frozenset[str]) -> tuple[dict[str, int], bool]:
    """Identity column -> minimum distinct identities, and whether any entry allows aggregating any expression."""
    thresholds: dict[str, int] = {}
    any_expression = False
    for entry in body.get("aggregationThresholds") or []:
        identity = _strings(entry, "identityColumns")
        if len(identity) != 1 or entry.get("type", "COUNT_DISTINCT") != "COUNT_DISTINCT":
            raise AnalysisRuleInvalid("aggregationThresholds takes exactly one identity column, counted COUNT_DISTINCT")
        _known(identity, "aggregationThresholds", allowed)
        thresholds[identity[0]] = _minimum(entry.get("minimumIdentityCount"), "minimumIdentityCount")
        expression_type = entry.get("allowedAggregateExpressionType", "COLUMNS_ONLY")
        if expression_type not in ("COLUMNS_ONLY", "ANY_EXPRESSION"):
            raise AnalysisRuleInvalid(
                f"allowedAggregateExpressionType {expression_type!r} is not COLUMNS_ONLY or ANY_EXPRESSION"
            )
        any_expression = any_expression or expression_type == "ANY_EXPRESSION"
    return thresholds, any_expression


_PARSERS = {"list": _list_rule, "aggregation": _aggregation_rule, "custom": _custom_rule}
