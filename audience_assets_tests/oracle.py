"""An independent computation of what the pipeline must produce from the demo landing zone.

It reads the landed files with Python's csv module and pyarrow (not DuckDB), normalizes with the
pure-Python reference (not the SQL path), and applies the match, selection and suppression rules
written out plainly here. End-to-end tests compare the pipeline's outputs with it.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from audience_assets.core.config import ProjectConfig
from audience_assets.core.identity import meta_value, normalize, sha256
from audience_assets.core.identity.rules import SOURCE_COLUMN

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class PartnerRecord:
    email: str
    phone: str
    segments: dict[str, str]


@dataclass
class Expected:
    customers: dict[str, dict[str, str]] = field(default_factory=dict)  # customer_id -> Meta cells
    partners: dict[str, list[PartnerRecord]] = field(default_factory=dict)
    suppressed_emails: set[str] = field(default_factory=set)
    suppressed_phones: set[str] = field(default_factory=set)
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # value column -> customer_id -> largest value

    def matches(self, partner: str) -> dict[str, list[dict[str, str]]]:
        """customer_id -> segment dicts of every partner record joined on email or phone."""
        by_email, by_phone = defaultdict(set), defaultdict(set)
        for cid, cells in self.customers.items():
            if cells["EMAIL"]:
                by_email[cells["EMAIL"]].add(cid)
            if cells["PHONE"]:
                by_phone[cells["PHONE"]].add(cid)
        found: dict[str, list[dict[str, str]]] = defaultdict(list)
        for record in self.partners[partner]:
            joined = (by_email.get(record.email, set()) if record.email else set()) | (
                by_phone.get(record.phone, set()) if record.phone else set()
            )
            for cid in joined:
                found[cid].append(record.segments)
        return found

    def suppressed(self) -> set[str]:
        return {
            cid
            for cid, c in self.customers.items()
            if (c["EMAIL"] and c["EMAIL"] in self.suppressed_emails)
            or (c["PHONE"] and c["PHONE"] in self.suppressed_phones)
        }

    def eligible(self, config: ProjectConfig, audience: str) -> set[str]:
        """Qualified through a selected partner segment and not suppressed: both arms of a holdout."""
        qualified = set()
        for partner, wanted in config.audiences[audience].select.items():
            for cid, records in self.matches(partner).items():
                if all(any(r.get(column) in values for r in records) for column, values in wanted.items()):
                    qualified.add(cid)
        return qualified - self.suppressed()

    def control(self, config: ProjectConfig, audience: str) -> set[str]:
        """The holdout's control arm (kept out of the upload)."""
        holdout = config.audiences[audience].holdout
        if holdout is None:
            return set()
        return {c for c in self.eligible(config, audience) if in_control(holdout.salt, holdout.share, c)}

    def members(self, config: ProjectConfig, audience: str) -> set[str]:
        return self.eligible(config, audience) - self.control(config, audience)

    def row_keys(self, config: ProjectConfig, audience: str, customers: set[str] | None = None) -> set[str]:
        """The canonical key of each payload row the audience would send for `customers` (default: its members),
        as the sandbox stores it: what it must hold, or must not."""
        return set(self.sent_values(config, audience, customers))

    def sent_values(
        self, config: ProjectConfig, audience: str, customers: set[str] | None = None
    ) -> dict[str, float | None]:
        """Row key -> the value it carries (None for a plain audience). A value-based audience sends only members
        with a value, and a row several customers share carries the largest of their values."""
        spec = config.audiences[audience]
        chosen = self.members(config, audience) if customers is None else customers
        values = self.values.get(spec.value.column, {}) if spec.value else {}
        sent: dict[str, float | None] = {}
        for cid in chosen:
            if spec.value and cid not in values:
                continue
            key = canonical_row_key({k: self.customers[cid][k] for k in spec.keys})
            value = values.get(cid)
            if value is not None and sent.get(key) is not None:
                value = max(value, sent[key])
            sent[key] = value
        return sent


def parse_value(cell: str) -> float | None:
    """README's rule for a customer value: a plain, finite, non-negative number (digits, an optional fraction and
    exponent), else none."""
    text = cell.strip()
    if not re.fullmatch(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def in_control(salt: str, share: float, customer_id: str) -> bool:
    """The holdout's rule as its docstring states it: the first 52 bits of SHA-256(salt, U+001F, id) below share."""
    bucket = int(hashlib.sha256(f"{salt}\x1f{customer_id}".encode()).hexdigest()[:13], 16)
    return bucket < share * 2**52


def canonical_row_key(cells: dict[str, str]) -> str:
    return hashlib.sha256("|".join(sorted(f"{k}={v}" for k, v in cells.items() if v)).encode()).hexdigest()


def _country(raw: str | None, default: str) -> str:
    return normalize("COUNTRY", raw or "") or default


def compute(landing: Path, config: ProjectConfig) -> Expected:
    expected = Expected()
    keys = config.payload_keys
    default = (config.sources.first_party.default_country or "US").lower()
    crm = next((landing / "first_party").glob("*.csv"))
    with crm.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cid = (row["customer_id"] or "").strip()
            country = _country(row.get("country"), default)
            cells = {
                k: meta_value(k, row.get(SOURCE_COLUMN[k], "") or "", country=country)
                for k in keys
                if k not in ("COUNTRY", "EXTERN_ID")
            }
            cells["COUNTRY"] = sha256(country)
            cells["EXTERN_ID"] = meta_value("EXTERN_ID", row["customer_id"])
            if cid and (cells["EMAIL"] or cells["PHONE"]):
                expected.customers.pop(cid, None)
                expected.customers[cid] = cells  # the last row of a repeated customer id wins
            for column in config.value_columns:  # every row of a customer id counts: the largest value wins
                value = parse_value(row.get(column) or "")
                if cid and value is not None:
                    known = expected.values.setdefault(column, {})
                    known[cid] = max(value, known.get(cid, value))
    for partner, contract in config.partners.items():
        records = []
        source_of = {std: src for src, std in contract.columns.items()}
        for path in sorted((landing / "partners" / partner).iterdir()):
            if contract.format == "csv":
                with path.open(newline="", encoding="utf-8") as handle:
                    reader = csv.reader(handle, delimiter=contract.delimiter)
                    header = next(reader)
                    rows = [dict(zip(header, r)) for r in reader if len(r) == len(header)]
            else:
                rows = pq.read_table(path).to_pylist()
            for row in rows:
                country = _country(
                    row.get(source_of.get("country", "country")), (contract.default_country or "US").lower()
                )
                email = meta_value("EMAIL", row.get(source_of.get("email", "email")) or "", country=country)
                for column, key in contract.prehashed.items():
                    digest = (row.get(column) or "").strip().lower()
                    if key == "EMAIL":
                        email = digest if HEX64.match(digest) else ""
                phone = meta_value("PHONE", row.get(source_of.get("phone", "phone")) or "", country=country)
                if email or phone:
                    segments = {s: (row.get(s) or "").strip() for s in contract.segments if (row.get(s) or "").strip()}
                    records.append(PartnerRecord(email, phone, segments))
        expected.partners[partner] = records
    for path in (landing / "suppression").glob("*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                country = _country(row.get("country"), "us")
                if e := meta_value("EMAIL", row.get("email") or "", country=country):
                    expected.suppressed_emails.add(e)
                if p := meta_value("PHONE", row.get("phone") or "", country=country):
                    expected.suppressed_phones.add(p)
    return expected
