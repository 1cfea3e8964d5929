"""Tenants (`tenants.yaml`, optional): each advertiser's Meta ad account and token, its partners, its defaults."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from audience_assets.core.config.audiences import AudienceDefaults
from audience_assets.core.config.base import Strict

AD_ACCOUNT = re.compile(r"^act_[0-9]+$")
IMPLICIT_TENANT = "default"  # the one tenant of a deployment without tenants.yaml
SHARED_TENANT = "shared"  # what deployment-wide steps (the CRM export, opt-outs) work for among several tenants


class Tenant(Strict):
    """An advertiser: its Meta ad account and token, the partners whose data it may use, its defaults."""

    meta_ad_account_id: str = Field(description="act_<digits>; the only ad account its audiences are written to")
    meta_token_env: str | None = Field(default=None, description="environment variable holding its access token")
    meta_token_secret_id: str | None = Field(default=None, description="AWS Secrets Manager secret holding its token")
    partners: list[str] = Field(description="the partners whose data its audiences may select")
    defaults: dict[str, Any] = Field(default_factory=dict, description="audience defaults for its audiences")

    @field_validator("meta_ad_account_id")
    @classmethod
    def _ad_account(cls, value: str) -> str:
        if not AD_ACCOUNT.match(value):
            raise ValueError(f"must look like act_<digits>, not {value!r}")
        return value

    @field_validator("defaults")
    @classmethod
    def _valid_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        AudienceDefaults(**value)  # the same rules as audiences.yaml's defaults (privacy floor, keys, ...)
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> Tenant:
        if bool(self.meta_token_env) == bool(self.meta_token_secret_id):
            raise ValueError("name exactly one of meta_token_env and meta_token_secret_id")
        return self


class TenantsConfig(Strict):
    tenants: dict[str, Tenant]
