"""What the landing zone holds that no source will read, and why: nothing delivered is ignored silently.

An object is left unread when it sits in a partner folder nobody declared (a new partner, a typo), outside
every source's prefix, in a sub-folder of a source's prefix (`processed/`: where housekeeping moves what was
delivered), under a name that marks an unfinished or hidden upload (`.part`, `.tmp`, `~`, a leading dot or
underscore), or when it is an older snapshot a later delivery superseded, or a copy of content already
delivered (`arrivals`). The landing-zone sensor logs each such object once and refreshes the
`landing_zone_report` asset; the headless run prints them. Reasons name the rule, never the contents.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from audience_assets.core.config import ProjectConfig
from audience_assets.core.ingestion.arrivals import ArrivalLog
from audience_assets.core.ingestion.deliveries import deliveries, skipped_reason
from audience_assets.core.layout import LANDING_PARTNERS, LANDING_ROOT
from audience_assets.core.store import Store, StoredObject


@dataclass(frozen=True)
class Ignored:
    key: str
    version: str
    size: int
    reason: str


def source_prefixes(config: ProjectConfig) -> dict[str, str]:
    """Prefix -> source name, for every declared source."""
    sources = config.sources
    return {
        **{sources.partner_prefix(p): p for p in config.partners},
        sources.first_party_prefix: "first_party",
        sources.suppression_prefix: "suppression",
    }


class LandingListing:
    """The landing zone (and the sources' own prefixes) listed once: `list(prefix)` answers from that listing,
    so a sensor tick that looks for deliveries and for unread objects lists the bucket once, not twice."""

    def __init__(self, store: Store, config: ProjectConfig):
        prefixes = source_prefixes(config)
        self.roots = [LANDING_ROOT, *(p for p in prefixes if not p.startswith(LANDING_ROOT))]
        self.objects = [obj for root in self.roots for obj in store.list(root)]
        self.store, self.config = store, config

    def list(self, prefix: str) -> Iterator[StoredObject]:
        if not any(prefix.startswith(root) for root in self.roots):
            yield from self.store.list(prefix)
            return
        yield from (obj for obj in self.objects if obj.key.startswith(prefix))


def ignored_objects(store: Store | LandingListing, config: ProjectConfig) -> Iterator[Ignored]:
    """Every object under the landing zone (and the sources' own prefixes) that no source reads."""
    listing = store if isinstance(store, LandingListing) else LandingListing(store, config)
    prefixes = source_prefixes(config)
    superseded: dict[str, str] = {}  # key -> why its source does not read it (the arrival logs, as they stand)
    for prefix, source in prefixes.items():
        contract = config.sources.contract(source)
        found = deliveries(listing.list(prefix), prefix, contract)
        superseded.update(ArrivalLog.load(listing.store, source).current(found, contract.delivery).not_read)
    for obj in listing.objects:
        reason = superseded.get(obj.key) or why_ignored(obj, prefixes, config)
        if reason:
            yield Ignored(obj.key, obj.version, obj.size, reason)


def why_ignored(obj: StoredObject, prefixes: dict[str, str], config: ProjectConfig) -> str | None:
    if obj.key.endswith("/") or obj.key.endswith("_$folder$"):
        return None  # a folder marker holds nothing
    prefix, source = next(((p, name) for p, name in prefixes.items() if obj.key.startswith(p)), ("", None))
    if source in config.partners and config.partners[source].clean_room.member:
        return f"{source} is a member of the collaboration (clean_room.member): nothing under its prefix is read"
    if source is not None:
        skipped = skipped_reason(obj, prefix, config.sources.contract(source))
        return f"{skipped}: not read by {source}" if skipped else None
    if obj.key.startswith(LANDING_PARTNERS):
        folder = obj.key[len(LANDING_PARTNERS) :].split("/", 1)[0]
        declared = ", ".join(sorted(config.partners))
        return f"partner folder {folder!r} is not declared in partners.yaml (declared: {declared})"
    return "outside every source's prefix (landing/partners/<partner>/, landing/first_party/, landing/suppression/)"
