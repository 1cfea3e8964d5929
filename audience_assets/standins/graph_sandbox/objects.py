"""Ad accounts and custom audiences as the Graph API describes them: the fields a client can ask for."""

from __future__ import annotations

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


def audience_fields(audience: dict[str, Any], size: int) -> dict[str, Any]:
    """A custom audience as Meta describes it, from its stored row and its member count."""
    lower, upper = (-1, -1) if size < 1000 else (int(size * 0.9), int(size * 1.1))
    return {
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
