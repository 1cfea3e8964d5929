"""Ad accounts and custom audiences as the Graph API describes them: the fields a client can ask for."""

from __future__ import annotations

import json
from typing import Any


def account_fields(account: str, info: dict[str, Any]) -> dict[str, Any]:
    """An ad account as Meta describes it (the fields the client reads)."""
    return {
        "id": account,
        "account_id": account.removeprefix("act_"),
        "name": info.get("name", account),
        "account_status": info.get("account_status", 1),
        "tos_accepted": {"custom_audience_tos": 1} if info.get("tos_accepted", True) else {},
    }


# Fields of a custom audience that only some audiences have: Graph leaves them out of the others' answers.
OPTIONAL_AUDIENCE_FIELDS = ("lookalike_spec",)
# The people a lookalike reaches per percent of its country: the sandbox's own figure (Meta's depends on the
# country's population); it makes a lookalike's approximate count deterministic.
LOOKALIKE_PEOPLE_PER_PERCENT = 2_000_000


def audience_fields(audience: dict[str, Any], size: int, origin_name: str | None = None) -> dict[str, Any]:
    """A custom audience as Meta describes it, from its stored row and its member count; a lookalike also has
    its `lookalike_spec` (naming its origin, `origin_name`) and a size its spec decides, not members."""
    lower, upper = (-1, -1) if size < 1000 else (int(size * 0.9), int(size * 1.1))
    fields = {
        "id": audience["id"],
        "name": audience["name"],
        "subtype": audience["subtype"],
        "description": audience["description"] or "",
        "customer_file_source": audience["customer_file_source"],
        "retention_days": audience["retention_days"],
        "is_value_based": bool(audience["is_value_based"]),
        "account_id": audience["account"].removeprefix("act_"),
        "approximate_count_lower_bound": lower,
        "approximate_count_upper_bound": upper,
        "operation_status": (
            {"code": 441, "description": "We're finding people who match your audience's criteria."}
            if audience.get("populating_reads")
            else {"code": audience["status_code"], "description": audience["status_text"]}
        ),
        "delivery_status": {
            "code": audience.get("delivery_code", 200),
            "description": audience.get("delivery_text", "This audience is ready for use."),
        },
        "time_updated": int(audience["updated"]),
        "time_content_updated": int(audience["updated"]),
        "sandbox_member_count": size,  # not a Meta field: the exact size, for tests and local demos
    }
    if audience["subtype"] == "LOOKALIKE" and audience.get("lookalike_spec"):
        fields.update(_lookalike_fields(audience, origin_name))
    return fields


def _lookalike_fields(audience: dict[str, Any], origin_name: str | None) -> dict[str, Any]:
    """A lookalike's `lookalike_spec` in Meta's read shape (its origin a list of {id, name, type}) and its
    approximate count: the band's percent of the country at LOOKALIKE_PEOPLE_PER_PERCENT, within 10 %."""
    spec = json.loads(audience["lookalike_spec"])
    percent = round(spec["ratio"] * 100) - round(spec["starting_ratio"] * 100)
    people = percent * LOOKALIKE_PEOPLE_PER_PERCENT
    origin = {"id": audience["origin_audience_id"], "name": origin_name or "", "type": "custom_audience"}
    return {
        "lookalike_spec": {
            "country": spec["country"],
            "ratio": spec["ratio"],
            "starting_ratio": spec["starting_ratio"],
            "type": spec["type"],
            "origin": [origin],
        },
        "approximate_count_lower_bound": int(people * 0.9),
        "approximate_count_upper_bound": int(people * 1.1),
    }
