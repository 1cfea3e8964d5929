"""Data contracts (`partners.yaml`): how each source's files are written, which columns feed which standard
identifier, the partners' segments and match keys, and how their tables are governed in the clean room."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from audience_assets.core.config.base import NAME_PATTERN, Strict
from audience_assets.core.identity import country_code
from audience_assets.core.identity.rules import STANDARD_COLUMNS


class DeliveryGuards(Strict):
    """When a delivery looks broken rather than changed (see `core.ingestion.guards`): it is then not
    published and downstream keeps the last accepted delivery."""

    max_shrink: float = Field(
        default=0.2, ge=0, le=1, description="guard when rows accepted fall by more than this share"
    )
    max_quarantine: float = Field(default=0.05, ge=0, le=1, description="guard when more rows are quarantined")
    allow_empty: bool = Field(default=False, description="a delivery with no accepted row may be published")


class FileContract(Strict):
    """How one source's files are written: format, text encoding and the column mapping."""

    prefix: str = ""
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    delimiter: str = ","
    encoding: Literal["utf-8", "latin-1", "utf-16"] = "utf-8"
    header: bool = True
    column_names: list[str] | None = Field(
        default=None, description="the columns, in order, of CSV files without a header row"
    )
    columns: dict[str, str] = Field(default_factory=dict, description="source column -> standard column")
    prehashed: dict[str, Literal["EMAIL", "PHONE"]] = Field(
        default_factory=dict, description="source column holding SHA-256 of the normalized value -> Meta key"
    )
    default_country: str | None = "US"
    delivery: Literal["snapshot", "incremental"] = "snapshot"
    subfolders: bool = Field(
        default=False,
        description="read files in sub-folders of the prefix too (by default a sub-folder, such as processed/, "
        "is where housekeeping moves what was delivered, and is not read)",
    )
    extra_columns: Literal["fail", "ignore"] = "fail"
    guards: DeliveryGuards | None = Field(
        default=None, description="this source's delivery guards; unset fields take the file's `guards:`"
    )
    retention_days: int | None = Field(
        default=None, ge=0, description="days its plaintext files are kept (default AUDIENCE_RETENTION_DAYS)"
    )

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError('must be a single character (use "\\t" for tab)')
        return value

    @field_validator("columns")
    @classmethod
    def _standard_targets(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(v for v in value.values() if v not in (*STANDARD_COLUMNS, "customer_id"))
        if unknown:
            raise ValueError(
                f"maps onto unknown standard column(s) {unknown}; standard columns are "
                f"{', '.join(STANDARD_COLUMNS)} (and customer_id for first-party data)"
            )
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
    def _names_differ_beyond_case(self) -> FileContract:
        """SQL names ignore case, so two columns differing only in case would be one column in DuckDB."""
        for what, names in (("columns", self.required_columns()), ("column_names entries", self.column_names or [])):
            folded: dict[str, str] = {}
            for name in names:
                if name.casefold() in folded and folded[name.casefold()] != name:
                    raise ValueError(
                        f"{what} {folded[name.casefold()]!r} and {name!r} differ only in case; SQL reads them as "
                        "one column: rename one"
                    )
                folded.setdefault(name.casefold(), name)
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


class CleanRoomTable(Strict):
    """How the table is governed in the clean room."""

    analysis_rule: dict[str, Any] | None = Field(
        default=None,
        description=(
            "the table's rule as AWS writes it (policy.v1: list, aggregation or custom), enforced by the local engine; "
            "default: CUSTOM allowing only this project's templates, hashed identifiers never in the output"
        ),
    )


class PartnerCleanRoom(CleanRoomTable):
    """The partner's table in the clean room and the analyses that run on it."""

    match_on: Literal["any", "all"] = Field(default="any", description="a record matches on any or on all match keys")
    member: bool = Field(
        default=False,
        description="the partner is a member of the collaboration and associates its own table from its own account "
        "(aws mode): nothing of it lands with us, the association (its name) is all the match needs",
    )
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


class SourcesConfig(Strict):
    partners: dict[str, PartnerContract]
    first_party: FirstPartyContract = FirstPartyContract()
    suppression: FileContract = FileContract(delivery="incremental")
    guards: DeliveryGuards = DeliveryGuards()

    def contract(self, source: str) -> FileContract:
        """The contract of a source: `first_party`, `suppression` or a partner's name."""
        named = {"first_party": self.first_party, "suppression": self.suppression}.get(source)
        return named or self.partners[source]

    def guards_for(self, source: str) -> DeliveryGuards:
        """A source's guards: its own `guards:` fields over the file-wide defaults."""
        own = self.contract(source).guards
        return self.guards.model_copy(update=own.model_dump(exclude_unset=True)) if own else self.guards

    @field_validator("partners")
    @classmethod
    def _names(cls, value: dict[str, PartnerContract]) -> dict[str, PartnerContract]:
        if not value:
            raise ValueError("declare at least one partner")
        for name in value:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"partner name {name!r} must be lower case letters, digits and _ (max 63)")
            if name in ("first_party", "suppression"):
                raise ValueError(f"partner name {name!r} is reserved for the source of that name")
        return value

    def prefix(self, source: str) -> str:
        """Where a source's files land: `first_party`, `suppression` or a partner's name."""
        named = {"first_party": self.first_party_prefix, "suppression": self.suppression_prefix}.get(source)
        return named or self.partner_prefix(source)

    def partner_prefix(self, name: str) -> str:
        return self.partners[name].prefix or f"landing/partners/{name}/"

    @property
    def first_party_prefix(self) -> str:
        return self.first_party.prefix or "landing/first_party/"

    @property
    def suppression_prefix(self) -> str:
        return self.suppression.prefix or "landing/suppression/"
