"""Audience declarations (`audiences.yaml`): who is in each audience and how it is synced to Meta."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from audience_assets.core.config.base import Strict
from audience_assets.core.graph_api import MAX_ROWS_PER_REQUEST
from audience_assets.core.identity import META_KEYS

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
        allowed = [k for k in META_KEYS if k != "LOOKALIKE_VALUE"]  # value-based audiences are not supported yet
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
        return self

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
