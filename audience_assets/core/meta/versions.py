"""Marketing API versions and their lifecycle, shipped as data (`data/marketing_api_versions.csv`, from Meta's
"Marketing API version history" page: version, release date, expiration date, and whether this project
checked its custom-audience contract against that version's changelog).

The default version is the newest one whose contract was checked. A configured version is *current*,
*expiring* (within `WARN_DAYS` of its expiration: a warning naming the date and the setting), *expired*
(uploads are refused before anything is sent; Meta answers a retired version with error 2635 or silently
upgrades it, flagged by the `X-Ad-Api-Version-Warning` response header), or *unknown* (not in the table:
newer than this release knows, or a typo).
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from audience_assets.core.findings import Finding

WARN_DAYS = 90
SETTING = "META_API_VERSION"


@dataclass(frozen=True)
class Version:
    name: str
    released: dt.date
    expires: dt.date | None  # None: Meta has not announced it yet
    contract_checked: bool

    @property
    def number(self) -> int:
        return int(self.name[1:].split(".")[0])


@cache
def versions() -> tuple[Version, ...]:
    text = (files("audience_assets.core.meta") / "data" / "marketing_api_versions.csv").read_text(encoding="utf-8")
    return tuple(
        Version(
            row["version"],
            dt.date.fromisoformat(row["released"]),
            dt.date.fromisoformat(row["expires"]) if row["expires"] else None,
            row["custom_audience_contract_checked"] == "yes",
        )
        for row in csv.DictReader(text.splitlines())
    )


def default_version() -> str:
    """The newest version whose custom-audience contract this project checked against its changelog."""
    return max((v for v in versions() if v.contract_checked), key=lambda v: v.released).name


def today() -> dt.date:
    """The date lifecycles are judged on (UTC)."""
    return dt.datetime.now(dt.UTC).date()


def live_versions(today: dt.date) -> list[Version]:
    """Released and not yet expired on `today`."""
    return [v for v in versions() if v.released <= today and (v.expires is None or today < v.expires)]


@dataclass(frozen=True)
class Lifecycle:
    version: str
    state: str  # current | expiring | expired | unknown
    expires: dt.date | None
    days_left: int | None

    @property
    def blocked(self) -> bool:
        return self.state == "expired"

    def message(self) -> str:
        if self.state == "expired":
            return (
                f"Marketing API {self.version} expired on {self.expires:%Y-%m-%d}: Meta refuses it (error 2635) or "
                f"upgrades it silently. Nothing is sent until {SETTING} names a live version "
                f"(default {default_version()})."
            )
        if self.state == "expiring":
            return (
                f"Marketing API {self.version} expires on {self.expires:%Y-%m-%d}, in {self.days_left} days: set "
                f"{SETTING} to a newer version (default {default_version()}) before then."
            )
        if self.state == "unknown":
            return f"{SETTING}={self.version} is not in this release's version table; its lifecycle is unknown."
        until = f"until {self.expires:%Y-%m-%d}" if self.expires else "no expiration announced yet"
        return f"Marketing API {self.version} is current ({until})."

    def finding(self) -> Finding:
        """Warns within 90 days of the version's expiration (or for a version the table does not know); blocks
        once it has expired."""
        expires = f"{self.expires:%Y-%m-%d}" if self.expires else "not announced"
        figures = {"api_version": self.version, "state": self.state, "expires": expires}
        figures["days_left"] = self.days_left if self.days_left is not None else -1
        return Finding(passed=self.state == "current", blocking=self.blocked, message=self.message(), metadata=figures)


def lifecycle(version: str, today: dt.date) -> Lifecycle:
    known = {v.name: v for v in versions()}.get(version)
    if known is None:
        return Lifecycle(version, "unknown", None, None)
    if known.expires is None:
        return Lifecycle(version, "current", None, None)
    days = (known.expires - today).days
    state = "expired" if days <= 0 else "expiring" if days <= WARN_DAYS else "current"
    return Lifecycle(version, state, known.expires, days)
