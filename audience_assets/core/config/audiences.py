"""Audience declarations (`audiences.yaml`): who is in each audience and how it is synced to Meta."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from audience_assets.core.config.base import Strict
from audience_assets.core.graph_api import MAX_ROWS_PER_REQUEST
from audience_assets.core.identity import META_KEYS
from audience_assets.core.identity.rules import countries

PRIVACY_FLOOR = 100  # Meta refuses smaller customer lists; we never send one


class DataProcessing(Strict):
    """Limited Data Use (Meta's `DATA_PROCESSING_OPTIONS`, with `_COUNTRY` and `_STATE`), for the whole audience
    (`options: [LDU]`) or per row (`column`: a first-party column; a row is LDU when its value, trimmed and
    case-insensitive, is one of `values`). Country and state: 0 and 0 let Meta geolocate each person; 1 and a
    state code (1000 California ... 1013) name them. Rows that are not LDU carry an empty option list."""

    options: list[Literal["LDU"]] = Field(default_factory=list)
    country: Literal[0, 1] = 0
    state: int = 0
    column: str | None = None
    values: list[str] = Field(default_factory=lambda: ["1", "true", "yes", "y", "ldu"])

    @model_validator(mode="after")
    def _meta_codes(self) -> DataProcessing:
        if not self.options and not self.column:
            raise ValueError("set options: [LDU] (every row) or column: (per row)")
        if self.options and self.column:
            raise ValueError("set either options (every row) or column (per row), not both")
        if (self.country, self.state) != (0, 0) and not (self.country == 1 and 1000 <= self.state <= 1013):
            raise ValueError("country/state must be 0/0 (Meta geolocates) or 1 with a US state code 1000-1013")
        return self


class Holdout(Strict):
    """A control group kept out of the upload to measure lift: each member falls in control or treatment by a
    salted SHA-256 of their customer id, so a person stays in their arm across runs and across audiences with the
    same salt. Only the treatment arm reaches Meta; both arms are recorded in the advertiser's storage."""

    share: float = Field(gt=0, le=0.5, description="the control arm's share of the members (0 < share <= 0.5)")
    salt: str = Field(min_length=1, max_length=100, description="names the split; change it to draw new arms")


class Value(Strict):
    """A value-based audience: each member's customer value (Meta's `LOOKALIKE_VALUE`, a JSON number, never
    hashed) from a first-party column, so that Meta ranks lookalike candidates by it. A value is a plain
    non-negative number (`44.5`, `140`, `0`); a blank cell is no value, and so is anything else (a currency sign,
    a thousands separator, a negative refund balance): counted as invalid on ingest. A person with several rows
    (a repeated customer id, or customers sharing every identifier) carries the largest of their values; a member
    without any value is left out of the upload (Meta takes no row of a value-based audience without one)."""

    column: str = Field(min_length=1, description="the first-party column holding each customer's value")


def percent(ratio: float) -> int:
    """A lookalike ratio as whole percent (Meta takes 0.01 to 0.20 in steps of 0.01)."""
    return round(ratio * 100)


class Lookalike(Strict):
    """A lookalike audience Meta builds from this audience (the seed): the people in `country` most like its
    members, the top `ratio` of the country (0.01-0.20), or the band from `starting_ratio` to `ratio`."""

    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code, e.g. US")
    ratio: float = Field(ge=0.01, le=0.20, description="the top share of the country, 0.01-0.20 in steps of 0.01")
    starting_ratio: float = Field(default=0.0, ge=0, lt=0.20, description="start of a band (0: the top)")

    @model_validator(mode="after")
    def _meta_rules(self) -> Lookalike:
        if self.country.lower() not in countries():
            raise ValueError(f"{self.country} is not an ISO 3166-1 alpha-2 country code")
        for name, value in (("ratio", self.ratio), ("starting_ratio", self.starting_ratio)):
            if abs(value * 100 - percent(value)) > 1e-6:
                raise ValueError(f"{name} {value} is not a step of 0.01 (Meta takes 0.01, 0.02, ... 0.20)")
        if percent(self.starting_ratio) >= percent(self.ratio):
            raise ValueError(f"starting_ratio {self.starting_ratio} must be below ratio {self.ratio}")
        return self

    @property
    def key(self) -> str:
        """The lookalike's name among its seed's: `US-1` (the top 1 %), `GB-1-5` (the band from 1 % to 5 %)."""
        band = [percent(self.starting_ratio)] if self.starting_ratio else []
        return "-".join([self.country, *(str(p) for p in [*band, percent(self.ratio)])])


class AudienceDefaults(Strict):
    mode: Literal["add", "remove", "mirror", "replace"] = "mirror"
    min_size: int = PRIVACY_FLOOR
    customer_file_source: Literal["USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED"] = (
        "USER_PROVIDED_ONLY"
    )
    retention_days: int = Field(default=180, ge=0, le=180)
    chunk_rows: int = Field(
        default=MAX_ROWS_PER_REQUEST,
        ge=1,
        le=MAX_ROWS_PER_REQUEST,
        description="rows per upload request (Meta allows 10,000)",
    )
    max_invalid_rate: float = Field(default=0.05, ge=0, le=1, description="warn above this share of invalid entries")
    max_removal: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="a mirror/replace sync removing more than this share of what Meta holds (opt-outs aside) "
        "waits for an approval",
    )
    data_processing: DataProcessing | None = Field(
        default=None, description="Limited Data Use for this audience's rows (see DataProcessing)"
    )
    approval: Literal["auto", "manual"] = Field(
        default="auto", description="manual: the plan waits until someone materializes meta_custom_audience"
    )
    freshness_hours: float = Field(default=26, gt=0, description="the audience is stale after this many hours")
    refresh_cron: str = Field(default="0 6 * * *", description="daily refresh of the audience (UTC)")
    keys: list[str] = Field(
        default_factory=lambda: [
            "EMAIL",
            "PHONE",
            "FN",
            "LN",
            "FI",
            "CT",
            "ST",
            "ZIP",
            "COUNTRY",
            "DOBY",
            "DOBM",
            "DOBD",
            "GEN",
            "EXTERN_ID",
        ]
    )

    @field_validator("min_size")
    @classmethod
    def _privacy_floor(cls, value: int) -> int:
        if value < PRIVACY_FLOOR:
            raise ValueError(f"must be at least {PRIVACY_FLOOR}: smaller audiences identify individuals")
        return value

    @field_validator("keys")
    @classmethod
    def _meta_keys(cls, value: list[str]) -> list[str]:
        if "LOOKALIKE_VALUE" in value:
            raise ValueError(
                "LOOKALIKE_VALUE is not a key: make a value-based audience with value: {column: <first-party "
                "column>} (every member's value is then sent with the keys)"
            )
        allowed = [k for k in META_KEYS if k != "LOOKALIKE_VALUE"]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(f"unknown or unsupported Meta key(s) {unknown}; choose from {', '.join(allowed)}")
        if len(set(value)) != len(value):
            raise ValueError("lists a key twice")
        return value


class Audience(AudienceDefaults):
    """One Meta custom audience: who is in it (segments per partner) and how it is synced."""

    meta_name: str = Field(min_length=1, description="the audience's name on Meta (renamed there when changed here)")
    meta_audience_id: str | None = Field(
        default=None,
        pattern=r"^\d{1,25}$",
        description="adopt this existing Meta audience (its id) instead of creating or finding one by name",
    )
    tenant: str | None = Field(
        default=None, description="the advertiser it belongs to (tenants.yaml); required once tenants are declared"
    )
    description: str = ""
    holdout: Holdout | None = Field(
        default=None, description="keep a control group out of the upload (see Holdout); changing it waits for approval"
    )
    value: Value | None = Field(
        default=None, description="a value-based audience: each member's value from a first-party column (see Value)"
    )
    lookalikes: list[Lookalike] = Field(
        default_factory=list, description="lookalike audiences Meta builds from this one (see Lookalike)"
    )
    select: dict[str, dict[str, list[str]]] = Field(
        description="partner -> {segment column: accepted values}; a person qualifies through any partner "
        "whose every listed segment matches one of its values"
    )

    @model_validator(mode="after")
    def _holdout_needs_a_mirrored_audience(self) -> Audience:
        """Only mirror and replace make Meta hold exactly the treatment arm: add never takes a member who moved
        to control out again, and in remove mode the members are whom to take out."""
        if self.holdout is not None and self.mode not in ("mirror", "replace"):
            raise ValueError(f"holdout needs mode mirror or replace (this audience's mode is {self.mode})")
        if self.lookalikes and self.mode == "remove":
            raise ValueError("lookalikes need a seed that holds people: this audience's mode is remove")
        return self

    @field_validator("lookalikes")
    @classmethod
    def _distinct_lookalikes(cls, value: list[Lookalike]) -> list[Lookalike]:
        """Meta refuses a second lookalike of one seed with the same country and size (error 2654)."""
        keys = [lookalike.key for lookalike in value]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"lists the lookalike {', '.join(repeated)} twice (Meta keeps one per country and size)")
        return value

    @field_validator("meta_audience_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        """An id written without quotes in YAML arrives as a number: taken as the digits it is."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("select")
    @classmethod
    def _not_empty(cls, value: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
        if not value:
            raise ValueError("select at least one partner")
        for partner, segments in value.items():
            for column, values in segments.items():
                if not values:
                    raise ValueError(f"{partner}.{column} lists no values")
        return value


class AudiencesConfig(Strict):
    defaults: AudienceDefaults = AudienceDefaults()
    audiences: dict[str, dict]
