"""The project's collaboration, as the local engine models it: who owns which table, the rule each table
carries, and the analysis templates rendered for each partner.

The advertiser (the query runner) owns `first_party`; each partner owns the table named after it. A table
without a configured rule gets the one a careful data owner would set on the Spark engine: CUSTOM,
allowing only this project's templates, with the hashed identifiers never allowed in the output.
In `analysis_rule:` the shipped template names (`audience_match`, `overlap_count`) stand for their ARNs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from audience_assets.core.cleanroom.rules import AnalysisRule, rule_from_policy
from audience_assets.core.cleanroom.tables import (
    FIRST_PARTY_TABLE,
    MATCH_COLUMNS,
    PARTNER_COLUMNS,
    PARTNER_IDENTITY,
    first_party_columns,
)
from audience_assets.core.cleanroom.templates import render_match, render_overlap

RUNNER_ACCOUNT = "111111111111"
PARTNER_ACCOUNT = "222222222222"
MEMBERSHIP_ID = "0a0d1e2f-0000-4000-8000-00000000a5e7"
TEMPLATES = ("audience_match", "overlap_count")


def template_arn(name: str, partner: str) -> str:
    """The local ARN of template `name` rendered for `partner`."""
    return f"arn:aws:cleanrooms:local:{RUNNER_ACCOUNT}:membership/{MEMBERSHIP_ID}/analysistemplate/{name}-{partner}"


def _expanded(policy: Mapping[str, Any], partners: Sequence[str]) -> dict[str, Any]:
    policy = copy.deepcopy(dict(policy))
    custom = policy.get("custom")
    if isinstance(custom, dict) and isinstance(custom.get("allowedAnalyses"), list):
        custom["allowedAnalyses"] = [
            arn
            for entry in custom["allowedAnalyses"]
            for arn in ([template_arn(entry, p) for p in partners] if entry in TEMPLATES else [entry])
        ]
    return policy


def partner_policy(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """A partner table's rule as written (`policy.v1`, template names standing for their ARNs): partners.yaml's,
    else the default, CUSTOM allowing only this project's templates, hashed identifiers never in the output."""
    return (
        copy.deepcopy(dict(policy))
        if policy
        else {
            "custom": {
                "allowedAnalyses": list(TEMPLATES),
                "disallowedOutputColumns": [*MATCH_COLUMNS.values(), PARTNER_IDENTITY],
            }
        }
    )


def first_party_policy(policy: Mapping[str, Any] | None, keys: Sequence[str]) -> dict[str, Any]:
    """The advertiser's table's rule as written, by the same default."""
    columns = first_party_columns(keys)
    return (
        copy.deepcopy(dict(policy))
        if policy
        else {"custom": {"allowedAnalyses": list(TEMPLATES), "disallowedOutputColumns": list(columns[1:])}}
    )


def partner_rule(policy: Mapping[str, Any] | None, partner: str) -> AnalysisRule:
    return rule_from_policy(_expanded(partner_policy(policy), [partner]), PARTNER_COLUMNS)


def first_party_rule(policy: Mapping[str, Any] | None, partners: Sequence[str], keys: Sequence[str]) -> AnalysisRule:
    return rule_from_policy(_expanded(first_party_policy(policy, keys), partners), first_party_columns(keys))


def analyses(partner: str, keys: Sequence[str], match_on: str, kind: str) -> dict[str, str]:
    """The templates to run for `partner` under rules of `kind`. A LIST rule admits only the single-join
    match; the overlap count needs subqueries, which only CUSTOM allows."""
    if kind == "LIST":
        return {"audience_match": render_match(partner, keys, match_on=match_on, single_join=True)}
    if kind == "AGGREGATION":
        return {}
    return {
        "audience_match": render_match(partner, keys, match_on=match_on),
        "overlap_count": render_overlap(partner, keys, match_on=match_on),
    }


__all__ = [
    "FIRST_PARTY_TABLE",
    "MEMBERSHIP_ID",
    "PARTNER_ACCOUNT",
    "RUNNER_ACCOUNT",
    "analyses",
    "first_party_rule",
    "partner_rule",
    "template_arn",
]
