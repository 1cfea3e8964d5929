"""The audience on Meta before any row is sent: found by name or created (never twice), and preflighted
(the token works, the account accepted the Custom Audience terms, the audience is a customer list that is
not flagged)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.errors import ErrorClass, MetaApiError, MetaPreflightError, MetaTransportError

# Meta's ad account `account_status` values (Ad Account reference); only 1 (active) can take uploads.
ACCOUNT_STATUS = {
    1: "active",
    2: "disabled",
    3: "unsettled (a payment is due)",
    7: "pending risk review",
    8: "pending settlement",
    9: "in a grace period",
    100: "pending closure",
    101: "closed",
    201: "active only for internal use",
    202: "closed for internal use",
}

POPULATING = 441  # operation_status while Meta is still matching an upload

AUDIENCE_FIELDS = (
    "id,name,subtype,customer_file_source,retention_days,description,operation_status,delivery_status,"
    "approximate_count_lower_bound,approximate_count_upper_bound,is_value_based,time_updated"
)
AUTH_ERROR_CODES = frozenset({102, 104, 190})  # the token itself is missing, invalid or expired
GONE = (100, 33)  # "Object with ID ... does not exist": how Meta answers for an audience that was deleted


class AmbiguousAudience(MetaPreflightError):
    """Several audiences of the ad account carry the name looked for."""


class AudienceManager:
    """Find-or-create and preflight for one ad account."""

    def __init__(self, client: GraphClient, ad_account_id: str):
        if not ad_account_id.startswith("act_") or not ad_account_id[4:].isdigit():
            raise ValueError(f"META_AD_ACCOUNT_ID must look like act_<digits>, got {ad_account_id!r}")
        self.client, self.ad_account_id = client, ad_account_id

    def named(self, name: str) -> list[dict[str, Any]]:
        """Every audience of the ad account called `name` (Meta allows several), read page by page."""
        found, after = [], None
        while True:
            params: dict[str, Any] = {"fields": "id,name,subtype", "limit": 200}
            if after:
                params["after"] = after
            page = self.client.get(f"{self.ad_account_id}/customaudiences", **params)
            found += [audience for audience in page.get("data", []) if audience.get("name") == name]
            paging = page.get("paging", {})
            after = paging.get("cursors", {}).get("after")
            if not paging.get("next") or not after:
                return found

    def find(self, name: str) -> dict[str, Any] | None:
        """The audience called `name`; `AmbiguousAudience` when the account holds several of that name."""
        found = self.named(name)
        if len(found) > 1:
            ids = ", ".join(str(a["id"]) for a in found)
            raise AmbiguousAudience(
                f"ad account {self.ad_account_id} holds {len(found)} audiences called {name!r} ({ids}): the pipeline "
                "cannot tell which one is this audience. Nothing was sent. Set meta_audience_id in audiences.yaml "
                "to the one to keep (and delete or rename the other in Ads Manager)"
            )
        return found[0] if found else None

    def lookup(self, audience_id: str) -> dict[str, Any] | None:
        """The audience with this id as Meta describes it, or None when Meta says it does not exist (deleted in
        Ads Manager, or by Meta). Any other error (no access, an outage) is raised, never taken as "gone"."""
        try:
            return self.client.get(audience_id, fields="id,name,description,subtype,account_id,is_value_based")
        except MetaApiError as error:
            if (error.code, error.subcode) == GONE:
                return None
            raise

    def update(self, audience_id: str, **fields: str) -> None:
        """Change an audience's name or description in place (`POST /{id}`): the same audience, members kept."""
        self.client.post(audience_id, dict(fields))

    def create(
        self,
        name: str,
        *,
        description: str,
        customer_file_source: str,
        retention_days: int,
        value_based: bool = False,
    ) -> dict[str, Any]:
        """A new customer-list audience called `name` (`{"id", "name"}`); `value_based` creates it with
        `is_value_based` (its rows then carry LOOKALIKE_VALUE; Meta fixes the kind at creation).

        Creation is not idempotent, so a timeout is followed by a lookup by name, never by a blind second create."""
        body: dict[str, Any] = {
            "name": name,
            "subtype": "CUSTOM",
            "description": description,
            "customer_file_source": customer_file_source,
            "retention_days": retention_days,
        }
        if value_based:
            body["is_value_based"] = "true"
        try:
            created = self.client.post(f"{self.ad_account_id}/customaudiences", body, retry_on_timeout=False)
        except MetaTransportError:
            found = self.find(name)
            if found:
                return found
            created = self.client.post(f"{self.ad_account_id}/customaudiences", body, retry_on_timeout=False)
        return {"id": str(created["id"]), "name": name}

    def read(self, audience_id: str, extra_fields: Sequence[str] = ()) -> dict[str, Any]:
        return self.client.get(audience_id, fields=",".join([AUDIENCE_FIELDS, *extra_fields]))

    def read_settled(
        self,
        audience_id: str,
        extra_fields: Sequence[str] = (),
        *,
        max_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """The audience after an upload, read again with growing pauses (a fortieth of `max_seconds`, doubling)
        while Meta reports it still populating (operation_status 441), for at most `max_seconds` (the client's
        `MetaPolicy.settle_seconds` unless given). The last read is returned either way, with `populating_polls`
        saying how often it was read again."""
        max_seconds = self.client.policy.settle_seconds if max_seconds is None else max_seconds
        started, pause, polls = time.monotonic(), max(0.05, max_seconds / 40), 0
        state = self.read(audience_id, extra_fields)
        while (state.get("operation_status") or {}).get("code") == POPULATING:
            left = max_seconds - (time.monotonic() - started)
            if left <= 0:
                break
            sleep(min(pause, left))
            pause, polls = pause * 2, polls + 1
            state = self.read(audience_id, extra_fields)
        return {**state, "populating_polls": polls}

    def preflight(self, audience_id: str) -> dict[str, Any]:
        """Check, before any row is sent, that the token, the account and the audience can take uploads."""
        self.preflight_account()
        return self.preflight_audience(audience_id)

    def preflight_account(self) -> None:
        """The token works, holds ads_management, and the ad account is active with the terms accepted."""
        try:
            self.client.get("me", fields="id")
            permissions = self.client.get("me/permissions")
            account = self.client.get(self.ad_account_id, fields="tos_accepted,account_status")
        except MetaApiError as error:
            if error.code in AUTH_ERROR_CODES:
                raise MetaPreflightError(f"the Meta access token does not work: {error}") from None
            if error.error_class is ErrorClass.FATAL:  # no rights on the account, or no such account
                raise MetaPreflightError(f"{self.ad_account_id} cannot take uploads with this token: {error}") from None
            raise  # an outage or a throttle, not a configuration problem
        granted = {p.get("permission") for p in permissions.get("data", []) if p.get("status") == "granted"}
        if "ads_management" not in granted:
            raise MetaPreflightError(
                "the Meta access token lacks the ads_management permission (needed to change custom audiences): "
                "generate a system-user token with ads_management for this app and set it as the token"
            )
        status = account.get("account_status")
        if status is not None and status != 1:
            meaning = ACCOUNT_STATUS.get(status, f"status {status}")
            raise MetaPreflightError(
                f"ad account {self.ad_account_id} is {meaning} (account_status {status}) and cannot take uploads: "
                "resolve it in Meta Business Settings (billing, review or reactivation), then rerun"
            )
        if not (account.get("tos_accepted") or {}).get("custom_audience_tos"):
            raise MetaPreflightError(
                f"the Custom Audience terms are not accepted for {self.ad_account_id}: accept them at "
                f"https://business.facebook.com/ads/manage/customaudiences/tos/?act={self.ad_account_id[4:]} and rerun"
            )

    def preflight_audience(self, audience_id: str) -> dict[str, Any]:
        """The audience is a customer list Meta has not flagged; returns it as Meta describes it."""
        try:
            audience = self.read(audience_id)
        except MetaApiError as error:
            if error.error_class is ErrorClass.FATAL:
                raise MetaPreflightError(f"audience {audience_id} cannot be read with this token: {error}") from None
            raise
        if audience.get("subtype") != "CUSTOM":
            raise MetaPreflightError(
                f"audience {audience_id} has subtype {audience.get('subtype')}; only CUSTOM "
                "(customer list) audiences accept uploads: choose another meta_name"
            )
        status = (audience.get("operation_status") or {}).get("code")
        if status == 471:
            raise MetaPreflightError(
                f"Meta flagged audience {audience_id} (operation_status 471): its name or "
                "description suggests restricted information; rename it and resolve it in Ads Manager"
            )
        return audience
