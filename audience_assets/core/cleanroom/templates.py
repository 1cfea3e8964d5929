"""The analyses, as SQL files in `templates/`, rendered for one partner (its table and the keys it matches on):
that text is what becomes an AWS Clean Rooms analysis template."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from audience_assets.core.cleanroom.tables import FIRST_PARTY_TABLE, MATCH_COLUMNS, PARTNER_IDENTITY


def _text(name: str) -> str:
    text = (
        resources.files("audience_assets.core.cleanroom")
        .joinpath("templates", f"{name}.sql")
        .read_text(encoding="utf-8")
    )
    return "\n".join(line for line in text.splitlines() if not line.startswith("--")).strip()


def _conditions(keys: Sequence[str]) -> list[str]:
    return [f"fp.{MATCH_COLUMNS[k]} = p.{MATCH_COLUMNS[k]}" for k in keys]


def render_match(partner: str, keys: Sequence[str], *, match_on: str = "any", single_join: bool = False) -> str:
    """`audience_match` for `partner`: rows match on any of `keys` (or all, with match_on="all").
    `single_join` writes "any" as one OR join, the only form a LIST rule accepts."""
    text = _text("audience_match").replace("{{partner}}", partner)
    conditions = _conditions(keys)
    if match_on == "all" or len(conditions) == 1:
        return text.replace("{{on}}", " AND ".join(conditions))
    if single_join:
        return text.replace("{{on}}", " OR ".join(conditions))
    # UNION removes duplicates itself: the branches need not each remove theirs first (a third fewer hashings)
    branch = text.replace("SELECT DISTINCT", "SELECT", 1)
    return "\nUNION\n".join(branch.replace("{{on}}", c) for c in conditions)


def render_overlap(partner: str, keys: Sequence[str], *, match_on: str = "any") -> str:
    """`overlap_count` for `partner`, matching as `render_match` does. The matched pairs carry the
    advertiser's customer id and the partner's hashed identifiers unchanged, so an aggregation threshold
    on any of them applies to the counts; identities are counted by their `partner_identity` number."""
    carried = ", ".join(f"p.{c}" for c in (*MATCH_COLUMNS.values(), PARTNER_IDENTITY))
    pair = f"SELECT fp.customer_id, {carried} FROM {FIRST_PARTY_TABLE} fp INNER JOIN {partner} p ON {{on}}"
    conditions = _conditions(keys)
    branches = [" AND ".join(conditions)] if match_on == "all" else conditions
    return _text("overlap_count").replace(
        "{{matched_pairs}}", "\nUNION ALL\n".join(pair.format(on=c) for c in branches)
    )
