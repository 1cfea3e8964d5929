"""Demo data for a fresh clone: a deterministic CRM export, two partners with messy identifiers, opt-outs
(`generator`), seeded into an empty local landing zone exactly once (`seed`)."""

from audience_assets.core.demo.generator import DemoFiles, generate
from audience_assets.core.demo.seed import ensure_demo_data

__all__ = ["DemoFiles", "ensure_demo_data", "generate"]
