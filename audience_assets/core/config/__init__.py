"""Data contracts (`partners.yaml`) and audience declarations (`audiences.yaml`), validated on load.

A mistake in either file fails at load time with a message that names the file, the entry and the
field, so nothing half-configured ever reaches a run.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audience_assets.core.cleanroom import collaboration
from audience_assets.core.cleanroom.rules import AnalysisRuleInvalid
from audience_assets.core.identity import META_KEYS, country_code
from audience_assets.core.identity.rules import STANDARD_COLUMNS
from audience_assets.core.meta.client import MAX_ROWS_PER_REQUEST

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"  # the shipped partners.yaml and audiences.yaml
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # usable as a partition key, an S3 prefix and a SQL name
MATCH_KEYS = ("EMAIL", "PHONE", "MADID")
SYNC_MODES = ("add", "remove", "mirror", "replace")
CUSTOMER_FILE_SOURCES = ("USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED")
PRIVACY_FLOOR = 100  # Meta refuses smaller customer lists; we never send one


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message says where and what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileContract(_Strict):
    """How one source's files are written: format, text encoding and the column mapping."""

    prefix: str = ""
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    delimiter: str = ","
    encoding: Literal["utf-8", "latin-1", "utf-16"] = "utf-8"
    header: bool = True
    column_names: list[str] | None = Field(default=None, description="the columns, in order, of CSV files without a header row")
    columns: dict[str, str] = Field(default_factory=dict, description="source column -> standard column")
    prehashed: dict[str, Literal["EMAIL", "PHONE"]] = Field(
        default_factory=dict, description="source column holding SHA-256 of the normalized value -> Meta key")
    default_country: str | None = "US"
    delivery: Literal["snapshot", "incremental"] = "snapshot"
    extra_columns: Literal["fail", "ignore"] = "fail"

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be a single character (use \"\\t\" for tab)")
        return value

    @field_validator("columns")
    @classmethod
    def _standard_targets(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(v for v in value.values() if v not in (*STANDARD_COLUMNS, "customer_id"))
        if unknown:
            raise ValueError(f"maps onto unknown standard column(s) {unknown}; standard columns are "
                             f"{', '.join(STANDARD_COLUMNS)} (and customer_id for first-party data)")
        targets = list(value.values())
        duplicated = sorted({t for t in targets if targets.count(t) > 1})
        if duplicated:
            raise ValueError(f"several source columns map onto {duplicated}")
        return value

    @field_validator("default_country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is not None and country_code(value) is None:
            raise ValueError(f"unknown country {value!r}; use an ISO 3166 code such as US or GB")
        return value

    @model_validator(mode="after")
    def _names_without_header(self) -> FileContract:
        if self.format == "csv" and not self.header and not self.column_names:
            raise ValueError("header: false needs column_names (the columns of each file, in order)")
        return self

    @model_validator(mode="after")
    def _no_double_source(self) -> FileContract:
        mapped = set(self.columns.values())
        for column, key in self.prehashed.items():
            if key.lower() in mapped:
                raise ValueError(f"prehashed column {column!r} and a mapped column both provide {key}")
        return self

    def standard_name(self, source_column: str) -> str | None:
        """The standard column a source column feeds, or None."""
        if source_column in self.columns:
            return self.columns[source_column]
        return source_column if source_column in (*STANDARD_COLUMNS, "customer_id") else None

    def required_columns(self) -> list[str]:
        """Columns every file must have: the mapped, pre-hashed and segment columns."""
        return list(dict.fromkeys([*self.columns, *self.prehashed, *getattr(self, "segments", [])]))

    def readable_columns(self) -> list[str]:
        """Required columns plus any standard column a file may carry under its own name."""
        targets = set(self.columns.values())
        optional = [c for c in (*STANDARD_COLUMNS, "customer_id") if c not in targets]
        return list(dict.fromkeys([*self.required_columns(), *optional]))


class CleanRoomTable(_Strict):
    """How the table is governed in the clean room."""

    analysis_rule: dict[str, Any] | None = Field(default=None, description=(
        "the table's rule as AWS writes it (policy.v1: list, aggregation or custom), enforced by the local engine; "
        "default: CUSTOM allowing only this project's templates, hashed identifiers never in the output"))


class PartnerCleanRoom(CleanRoomTable):
    """The partner's table in the clean room and the analyses that run on it."""

    match_on: Literal["any", "all"] = Field(default="any", description="a record matches on any or on all match keys")
    match_template_arn: str | None = Field(default=None, description="aws mode: the audience_match template's ARN")
    overlap_template_arn: str | None = Field(default=None, description="aws mode: the overlap_count template's ARN")


class PartnerContract(FileContract):
    """A partner's delivery: a file contract plus the segment columns and the keys to match on."""

    segments: list[str] = Field(default_factory=list)
    min_match_rate: float = Field(default=0.01, ge=0, le=1, description="warn when fewer customers match")
    freshness_hours: float = Field(default=26, gt=0, description="the partner's data is stale after this many hours")
    match_keys: list[Literal["EMAIL", "PHONE", "MADID"]] = Field(default_factory=lambda: ["EMAIL", "PHONE"])
    clean_room: PartnerCleanRoom = PartnerCleanRoom()

    @model_validator(mode="after")
    def _segments_are_not_identifiers(self) -> PartnerContract:
        clash = sorted(set(self.segments) & (set(self.columns) | set(self.prehashed) | set(STANDARD_COLUMNS)))
        if clash:
            raise ValueError(f"segment column(s) {clash} are also identifier columns")
        return self


class FirstPartyContract(FileContract):
    """The advertiser's CRM export: customer_id is required on every row."""

    delivery: Literal["snapshot", "incremental"] = "snapshot"
    clean_room: CleanRoomTable = CleanRoomTable()


class SourcesConfig(_Strict):
    partners: dict[str, PartnerContract]
    first_party: FirstPartyContract = FirstPartyContract()
    suppression: FileContract = FileContract(delivery="incremental")

    @field_validator("partners")
    @classmethod
    def _names(cls, value: dict[str, PartnerContract]) -> dict[str, PartnerContract]:
        if not value:
            raise ValueError("declare at least one partner")
        for name in value:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"partner name {name!r} must be lower case letters, digits and _ (max 63)")
        return value

    def partner_prefix(self, name: str) -> str:
        return self.partners[name].prefix or f"landing/partners/{name}/"

    @property
    def first_party_prefix(self) -> str:
        return self.first_party.prefix or "landing/first_party/"

    @property
    def suppression_prefix(self) -> str:
        return self.suppression.prefix or "landing/suppression/"


class AudienceDefaults(_Strict):
    mode: Literal["add", "remove", "mirror", "replace"] = "mirror"
    min_size: int = PRIVACY_FLOOR
    customer_file_source: Literal["USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED"] = (
        "USER_PROVIDED_ONLY")
    retention_days: int = Field(default=180, ge=0, le=180)
    chunk_rows: int = Field(default=MAX_ROWS_PER_REQUEST, ge=1, le=MAX_ROWS_PER_REQUEST,
                            description="rows per upload request (Meta allows 10,000)")
    max_invalid_rate: float = Field(default=0.05, ge=0, le=1, description="warn above this share of invalid entries")
    freshness_hours: float = Field(default=26, gt=0, description="the audience is stale after this many hours")
    refresh_cron: str = Field(default="0 6 * * *", description="daily refresh of the audience (UTC)")
    keys: list[str] = Field(default_factory=lambda: [
        "EMAIL", "PHONE", "FN", "LN", "FI", "CT", "ST", "ZIP", "COUNTRY", "DOBY", "DOBM", "DOBD", "GEN", "EXTERN_ID"])

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

    meta_name: str
    tenant: str | None = Field(default=None, description="the advertiser it belongs to (tenants.yaml); "
                                                         "required once tenants are declared")
    description: str = ""
    select: dict[str, dict[str, list[str]]] = Field(
        description="partner -> {segment column: accepted values}; a person qualifies through any partner "
                    "whose every listed segment matches one of its values")

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


AD_ACCOUNT = re.compile(r"^act_[0-9]+$")
IMPLICIT_TENANT = "default"  # the one tenant of a deployment without tenants.yaml
SHARED_TENANT = "shared"  # what deployment-wide steps (the CRM export, opt-outs) work for among several tenants


class Tenant(_Strict):
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


class TenantsConfig(_Strict):
    tenants: dict[str, Tenant]


class AudiencesConfig(_Strict):
    defaults: AudienceDefaults = AudienceDefaults()
    audiences: dict[str, dict]


class ProjectConfig:
    """Both files, loaded and cross-checked (audiences may only select declared partners and segments)."""

    def __init__(self, sources: SourcesConfig, audiences: dict[str, Audience], tenants: dict[str, Tenant] | None = None):
        self.sources = sources
        self.audiences = audiences
        self.declared_tenants = tenants  # None: one implicit tenant, configured by the META_* variables
        for name, audience in audiences.items():
            if not NAME_PATTERN.match(name):
                raise ConfigError(f"audiences.yaml: audience name {name!r} must be lower case letters, digits and _")
            for partner, segments in audience.select.items():
                if partner not in sources.partners:
                    raise ConfigError(f"audiences.yaml: audience {name!r} selects unknown partner {partner!r}; "
                                      f"declared partners: {', '.join(sources.partners)}")
                missing = sorted(set(segments) - set(sources.partners[partner].segments))
                if missing:
                    raise ConfigError(f"audiences.yaml: audience {name!r} selects {partner} segment(s) {missing} "
                                      f"that partners.yaml does not declare for {partner!r}")
        self._check_clean_room()
        self._check_tenants()

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

    def _check_tenants(self) -> None:
        """Isolation by construction: each partner and ad account belongs to one tenant, and an audience
        selects only its own tenant's partners."""
        if self.declared_tenants is None:
            named = next((name for name, a in self.audiences.items() if a.tenant is not None), None)
            if named is not None:
                raise ConfigError(f"audiences.yaml: audience {named!r} names tenant {self.audiences[named].tenant!r}, "
                                  "but no tenants.yaml declares tenants; add it, or remove `tenant:`")
            return
        owners: dict[str, str] = {}
        accounts: dict[str, str] = {}
        for name, tenant in self.declared_tenants.items():
            if not NAME_PATTERN.match(name):
                raise ConfigError(f"tenants.yaml: tenant name {name!r} must be lower case letters, digits and _ (max 63)")
            if tenant.meta_ad_account_id in accounts:
                raise ConfigError(f"tenants.yaml: tenants {accounts[tenant.meta_ad_account_id]!r} and {name!r} name the "
                                  f"same ad account {tenant.meta_ad_account_id}; each tenant writes to its own")
            accounts[tenant.meta_ad_account_id] = name
            for partner in tenant.partners:
                if partner not in self.partners:
                    raise ConfigError(f"tenants.yaml: tenant {name!r} lists unknown partner {partner!r}; declared "
                                      f"partners: {', '.join(self.partners)}")
                if partner in owners:
                    raise ConfigError(f"tenants.yaml: partner {partner!r} is listed by tenants {owners[partner]!r} and "
                                      f"{name!r}; a partner's data belongs to one tenant")
                owners[partner] = name
        unowned = sorted(set(self.partners) - set(owners))
        if unowned:
            raise ConfigError(f"tenants.yaml: partner(s) {unowned} belong to no tenant; list each under one tenant")
        for audience_name, audience in self.audiences.items():
            if audience.tenant is None:
                raise ConfigError(f"audiences.yaml: audience {audience_name!r} names no tenant; with tenants.yaml "
                                  f"every audience needs `tenant:` (one of {', '.join(sorted(self.declared_tenants))})")
            if audience.tenant not in self.declared_tenants:
                raise ConfigError(f"audiences.yaml: audience {audience_name!r} names unknown tenant {audience.tenant!r}; "
                                  f"declared tenants: {', '.join(sorted(self.declared_tenants))}")
            foreign = sorted(p for p in audience.select if owners[p] != audience.tenant)
            if foreign:
                raise ConfigError(f"audiences.yaml: audience {audience_name!r} of tenant {audience.tenant!r} selects "
                                  f"partner(s) {foreign} of tenant {owners[foreign[0]]!r}; tenants never share data")

    def _check_clean_room(self) -> None:
        """Every table's analysis rule is valid, and each partner's can run the audience match."""
        where = "partners.yaml: first_party.clean_room.analysis_rule"
        try:
            first_party = collaboration.first_party_rule(self.sources.first_party.clean_room.analysis_rule,
                                                         list(self.partners), self.match_keys)
            for partner, contract in self.partners.items():
                where = f"partners.yaml: partners.{partner}.clean_room.analysis_rule"
                rule = collaboration.partner_rule(contract.clean_room.analysis_rule, partner)
                if rule.kind == "AGGREGATION":
                    raise AnalysisRuleInvalid("an AGGREGATION rule admits only aggregates; the audience match needs "
                                              "a LIST or CUSTOM rule")
                if rule.kind != first_party.kind:
                    raise AnalysisRuleInvalid(f"a query reads tables of one rule type only, and first_party's rule is "
                                              f"{first_party.kind}, not {rule.kind}")
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
    def match_keys(self) -> list[str]:
        """Keys the clean room joins on: every partner's match keys."""
        wanted = {k for p in self.partners.values() for k in p.match_keys}
        return [k for k in ("EMAIL", "PHONE", "MADID") if k in wanted]

    @cached_property
    def partners_by_audience(self) -> dict[str, list[str]]:
        return {name: sorted(a.select) for name, a in self.audiences.items()}


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (set AUDIENCE_CONFIG_DIR to the folder holding it)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _explain(path: Path, error: ValidationError, prefix: str = "") -> ConfigError:
    lines = []
    for issue in error.errors():
        where = ".".join([prefix] * bool(prefix) + [str(part) for part in issue["loc"]])
        lines.append(f"  {where}: {issue['msg']}")
    return ConfigError(f"{path}: invalid configuration\n" + "\n".join(lines))


def load_config(config_dir: Path | str | None = None) -> ProjectConfig:
    """Load and validate `partners.yaml` and `audiences.yaml` from `config_dir` (default: the package's)."""
    folder = Path(config_dir) if config_dir else PACKAGE_CONFIG_DIR
    partners_path, audiences_path = folder / "partners.yaml", folder / "audiences.yaml"
    tenants_path = folder / "tenants.yaml"
    tenants = None
    if tenants_path.is_file():  # optional: without it, one implicit tenant (the META_* variables)
        try:
            tenants = TenantsConfig(**_load_yaml(tenants_path)).tenants
        except ValidationError as error:
            raise _explain(tenants_path, error) from None
        if not tenants:
            raise ConfigError(f"{tenants_path}: declare at least one tenant under 'tenants:' (or remove the file)")
    try:
        sources = SourcesConfig(**_load_yaml(partners_path))
    except ValidationError as error:
        raise _explain(partners_path, error) from None
    try:
        declared = AudiencesConfig(**_load_yaml(audiences_path))
    except ValidationError as error:
        raise _explain(audiences_path, error) from None
    if not declared.audiences:
        raise ConfigError(f"{audiences_path}: declare at least one audience under 'audiences:'")
    audiences = {}
    for name, spec in declared.audiences.items():
        spec = spec or {}
        tenant = (tenants or {}).get(spec.get("tenant"))
        try:  # defaults, then the tenant's defaults, then the audience's own settings
            audiences[name] = Audience(**{**declared.defaults.model_dump(), **(tenant.defaults if tenant else {}), **spec})
        except ValidationError as error:
            raise _explain(audiences_path, error, prefix=f"audiences.{name}") from None
    return ProjectConfig(sources, audiences, tenants)
