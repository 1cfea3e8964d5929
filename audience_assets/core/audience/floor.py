"""The privacy floor: no audience smaller than its `min_size` (never below 100, see `config.PRIVACY_FLOOR`)
ever reaches Meta, neither as the members selected nor as what an upload would leave on Meta.

A removal list (mode `remove`) is not an audience: its floor applies to what stays on Meta.
"""

from __future__ import annotations

from audience_assets.core.audience.plan import Plan


def members_after(plan: Plan) -> int | None:
    """How many rows Meta would hold once the plan is sent (None when it sends nothing). Rows sent again to update
    their LDU status or value (`resent_rows`) are already held: they add no one."""
    rows = {op.kind: op.rows for op in plan.operations}
    if not rows:
        return None
    if "replace" in rows:
        return rows["replace"]
    return plan.confirmed_rows + rows.get("add", 0) - plan.resent_rows - rows.get("remove", 0)


def below_floor(audience: str, min_size: int, *, members: int | None = None, after: int | None = None) -> str | None:
    """Why the audience may not flow on (its `members`, or the rows an upload would leave), or None."""
    if members is not None and members < min_size:
        return (
            f"audience {audience!r} has {members} members, below its privacy floor of {min_size}: nothing is "
            "uploaded until it grows or its selection widens"
        )
    if after is not None and after < min_size:
        return (
            f"the upload for {audience!r} would leave {after} members on Meta, below its privacy floor of "
            f"{min_size}: refused; nothing was sent"
        )
    return None
