"""The project's configuration, cross-checked: audiences select declared partners and segments, tenants never
share partners or ad accounts, and every clean-room rule can run the match."""

from __future__ import annotations

from functools import cached_property

from audience_assets.core.cleanroom import collaboration
from audience_assets.core.cleanroom.rules import AnalysisRuleInvalid
from audience_assets.core.config.audiences import Audience
from audience_assets.core.config.base import NAME_PATTERN, ConfigError
from audience_assets.core.config.contracts import PartnerContract, SourcesConfig
from audience_assets.core.config.tenants import IMPLICIT_TENANT, SHARED_TENANT, Tenant
from audience_assets.core.identity import META_KEYS


class ProjectConfig:
    """Both files, loaded and cross-checked (audiences may only select declared partners and segments)."""

    def __init__(
        self, sources: SourcesConfig, audiences: dict[str, Audience], tenants: dict[str, Tenant] | None = None
    ):
        self.sources = sources
        self.audiences = audiences
        self.declared_tenants = tenants  # None: one implicit tenant, configured by the META_* variables
        for name, audience in audiences.items():
            if not NAME_PATTERN.match(name):
                raise ConfigError(f"audiences.yaml: audience name {name!r} must be lower case letters, digits and _")
            for partner, segments in audience.select.items():
                if partner not in sources.partners:
                    raise ConfigError(
                        f"audiences.yaml: audience {name!r} selects unknown partner {partner!r}; "
                        f"declared partners: {', '.join(sources.partners)}"
                    )
                missing = sorted(set(segments) - set(sources.partners[partner].segments))
                if missing:
                    raise ConfigError(
                        f"audiences.yaml: audience {name!r} selects {partner} segment(s) {missing} "
                        f"that partners.yaml does not declare for {partner!r}"
                    )
        self._check_clean_room()
        self._check_tenants()
        self._check_meta_names()
        self._check_value_columns()

    @property
    def multi_tenant(self) -> bool:
        """Tenants are declared in tenants.yaml (rather than the one implicit tenant)."""
        return self.declared_tenants is not None

    @cached_property
    def tenant_names(self) -> list[str]:
        return sorted(self.declared_tenants) if self.declared_tenants is not None else [IMPLICIT_TENANT]

    @property
    def deployment_tenant(self) -> str:
        """The tenant deployment-wide steps are attributed to: the only tenant, or `shared` among several."""
        return SHARED_TENANT if self.multi_tenant else IMPLICIT_TENANT

    def tenant(self, name: str) -> Tenant | None:
        """The declared tenant `name`, or None for the implicit tenant."""
        return self.declared_tenants[name] if self.declared_tenants is not None else None

    def tenant_of_audience(self, audience: str) -> str:
        return self.audiences[audience].tenant or IMPLICIT_TENANT

    def tenant_of_partner(self, partner: str) -> str:
        if self.declared_tenants is None:
            return IMPLICIT_TENANT
        return next(name for name, t in self.declared_tenants.items() if partner in t.partners)

    def audiences_of(self, tenant: str) -> list[str]:
        return sorted(a for a in self.audiences if self.tenant_of_audience(a) == tenant)

    def lookalikes_of(self, tenant: str) -> dict[str, list[str]]:
        """Per audience of `tenant` that declares lookalikes, their partition keys (`<audience>.<lookalike key>`,
        e.g. `new_parents.US-1`: a dot is never part of an audience's name)."""
        return {
            name: [f"{name}.{lookalike.key}" for lookalike in self.audiences[name].lookalikes]
            for name in self.audiences_of(tenant)
            if self.audiences[name].lookalikes
        }

    def _check_value_columns(self) -> None:
        """A value column is a first-party column of its own, never an identifier: a value leaves for Meta as it is,
        unhashed, so values read from an email or phone column would send those in clear. When the contract names
        the export's columns (`column_names`), it is one of them."""
        first_party = self.sources.first_party
        for name, audience in self.audiences.items():
            column = audience.value.column if audience.value else None
            if column is None:
                continue
            if first_party.standard_name(column) or column in first_party.prehashed:
                raise ConfigError(
                    f"audiences.yaml: audience {name!r} takes its values from {column!r}, an identifier column of the "
                    "first-party export (values leave unhashed); name the column that holds each customer's value"
                )
            if first_party.column_names and column not in first_party.column_names:
                raise ConfigError(
                    f"audiences.yaml: audience {name!r} takes its values from {column!r}, which is not among "
                    f"first_party's column_names in partners.yaml ({', '.join(first_party.column_names)})"
                )

    def _check_tenants(self) -> None:
        """Isolation by construction: each partner and ad account belongs to one tenant, and an audience
        selects only its own tenant's partners."""
        if self.declared_tenants is None:
            named = next((name for name, a in self.audiences.items() if a.tenant is not None), None)
            if named is not None:
                raise ConfigError(
                    f"audiences.yaml: audience {named!r} names tenant {self.audiences[named].tenant!r}, "
                    "but no tenants.yaml declares tenants; add it, or remove `tenant:`"
                )
            return
        owners: dict[str, str] = {}
        accounts: dict[str, str] = {}
        for name, tenant in self.declared_tenants.items():
            if not NAME_PATTERN.match(name):
                raise ConfigError(
                    f"tenants.yaml: tenant name {name!r} must be lower case letters, digits and _ (max 63)"
                )
            if tenant.meta_ad_account_id in accounts:
                raise ConfigError(
                    f"tenants.yaml: tenants {accounts[tenant.meta_ad_account_id]!r} and {name!r} name the "
                    f"same ad account {tenant.meta_ad_account_id}; each tenant writes to its own"
                )
            accounts[tenant.meta_ad_account_id] = name
            for partner in tenant.partners:
                if partner not in self.partners:
                    raise ConfigError(
                        f"tenants.yaml: tenant {name!r} lists unknown partner {partner!r}; declared "
                        f"partners: {', '.join(self.partners)}"
                    )
                if partner in owners:
                    raise ConfigError(
                        f"tenants.yaml: partner {partner!r} is listed by tenants {owners[partner]!r} and "
                        f"{name!r}; a partner's data belongs to one tenant"
                    )
                owners[partner] = name
        unowned = sorted(set(self.partners) - set(owners))
        if unowned:
            raise ConfigError(f"tenants.yaml: partner(s) {unowned} belong to no tenant; list each under one tenant")
        for audience_name, audience in self.audiences.items():
            if audience.tenant is None:
                raise ConfigError(
                    f"audiences.yaml: audience {audience_name!r} names no tenant; with tenants.yaml "
                    f"every audience needs `tenant:` (one of {', '.join(sorted(self.declared_tenants))})"
                )
            if audience.tenant not in self.declared_tenants:
                raise ConfigError(
                    f"audiences.yaml: audience {audience_name!r} names unknown tenant {audience.tenant!r}; "
                    f"declared tenants: {', '.join(sorted(self.declared_tenants))}"
                )
            foreign = sorted(p for p in audience.select if owners[p] != audience.tenant)
            if foreign:
                raise ConfigError(
                    f"audiences.yaml: audience {audience_name!r} of tenant {audience.tenant!r} selects "
                    f"partner(s) {foreign} of tenant {owners[foreign[0]]!r}; tenants never share data"
                )

    def _check_meta_names(self) -> None:
        """Two audiences of one ad account may not share a Meta name (nor one differing only in case): they would
        be found as one audience, and people could not tell them apart in Ads Manager."""
        seen: dict[tuple[str, str], str] = {}
        for name, audience in sorted(self.audiences.items()):
            slot = (self.tenant_of_audience(name), audience.meta_name.casefold())
            if slot in seen:
                raise ConfigError(
                    f"audiences.yaml: audiences {seen[slot]!r} and {name!r} both name the Meta audience "
                    f"{audience.meta_name!r} (names are compared ignoring case): give each its own meta_name"
                )
            seen[slot] = name

    def _check_clean_room(self) -> None:
        """Every table's analysis rule is valid, and each partner's can run the audience match."""
        where = "partners.yaml: first_party.clean_room.analysis_rule"
        try:
            first_party = collaboration.first_party_rule(
                self.sources.first_party.clean_room.analysis_rule, list(self.partners), self.match_keys
            )
            for partner, contract in self.partners.items():
                where = f"partners.yaml: partners.{partner}.clean_room.analysis_rule"
                rule = collaboration.partner_rule(contract.clean_room.analysis_rule, partner)
                if rule.kind == "AGGREGATION":
                    raise AnalysisRuleInvalid(
                        "an AGGREGATION rule admits only aggregates; the audience match needs a LIST or CUSTOM rule"
                    )
                if rule.kind != first_party.kind:
                    raise AnalysisRuleInvalid(
                        f"a query reads tables of one rule type only, and first_party's rule is "
                        f"{first_party.kind}, not {rule.kind}"
                    )
        except AnalysisRuleInvalid as error:
            raise ConfigError(f"{where}: {error}") from None

    @property
    def partners(self) -> dict[str, PartnerContract]:
        return self.sources.partners

    @cached_property
    def payload_keys(self) -> list[str]:
        """Meta keys computed for first-party customers: every audience's keys plus the match keys."""
        wanted = {k for a in self.audiences.values() for k in a.keys} | set(self.match_keys)
        return [k for k in META_KEYS if k in wanted]

    @cached_property
    def consent_columns(self) -> list[str]:
        """First-party columns that decide Limited Data Use per row (audiences' `data_processing.column`)."""
        return sorted(
            {
                a.data_processing.column
                for a in self.audiences.values()
                if a.data_processing and a.data_processing.column
            }
        )

    @cached_property
    def value_columns(self) -> list[str]:
        """First-party columns holding customer values (value-based audiences' `value.column`)."""
        return sorted({a.value.column for a in self.audiences.values() if a.value})

    @cached_property
    def match_keys(self) -> list[str]:
        """Keys the clean room joins on: every partner's match keys."""
        wanted = {k for p in self.partners.values() for k in p.match_keys}
        return [k for k in ("EMAIL", "PHONE", "MADID") if k in wanted]
