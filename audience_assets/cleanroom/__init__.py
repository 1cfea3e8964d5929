"""The clean room: the match of first-party and partner data, where only what an analysis allows leaves.

`templates/` holds the analyses as SQL files (the same text becomes an AWS Clean Rooms analysis
template); `local` runs them in DuckDB with the protected-query lifecycle, `aws` drives the service.
"""

from __future__ import annotations

from importlib import resources

TEMPLATES = ("audience_match", "overlap_count")


def template_sql(name: str, *, partner: str) -> str:
    """The analysis template `name` as created for `partner`'s table association."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown analysis template {name!r}; shipped templates: {', '.join(TEMPLATES)}")
    text = resources.files(__package__).joinpath("templates", f"{name}.sql").read_text(encoding="utf-8")
    return text.replace("{{partner}}", partner)
