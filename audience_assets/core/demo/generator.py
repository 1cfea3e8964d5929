"""Deterministic demo data: a CRM export and two partner deliveries that overlap it, written messily.

The same person appears in several files formatted differently (upper-case and padded emails, phones
in national and international notation, names with accents and punctuation, ZIP+4, state names and
codes), which is what real partner and CRM files look like and what normalization must reconcile.
A few rows are deliberately unusable so the quarantine has something to show. Everything derives from
one seed, so the same call always writes byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from audience_assets.core.demo.vocabulary import (
    ABROAD,
    AGE_BANDS,
    BETA_SEGMENTS,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    INTERESTS,
    LAST_NAMES,
    PROPENSITY,
    US_AREA_CODES,
    US_PLACES,
)

# where each file lands, under the landing zone, and its columns
CRM_FILE = "first_party/crm_export_2026-11-01.csv"
CRM_HEADER = [
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "city",
    "state",
    "zip",
    "country",
    "dob",
    "gender",
    "ltv_usd",
]
ACME_FILE = "partners/acme_data/acme_audience_2026-11-01.csv"
ACME_HEADER = ["Email Address", "Mobile Number", "First", "Last", "Zip", "Interest", "Age Band"]
BETA_FILE = "partners/beta_insights/beta_segments_2026-11-01.parquet"
BETA_HEADER = ["email_sha256", "phone_number", "country_code", "segment", "propensity"]
SUPPRESSION_FILE = "suppression/optouts_2026-11-01.csv"
SUPPRESSION_HEADER = ["email", "phone", "country"]


@dataclass(frozen=True)
class Person:
    customer_id: str
    email: str
    phone_national: str
    calling_code: str
    first_name: str
    last_name: str
    city: str
    state: str
    zip: str
    country: str
    dob: tuple[int, int, int] | None
    gender: str


@dataclass(frozen=True)
class DemoFiles:
    """Where the generator wrote each file, relative to the data directory."""

    first_party: str
    partners: dict[str, str]
    suppression: str


def _person(rnd: random.Random, index: int) -> Person:
    first, last = rnd.choice(FIRST_NAMES), rnd.choice(LAST_NAMES)
    local = "".join(ch for ch in f"{first}.{last}".lower() if ch.isascii() and (ch.isalnum() or ch == "."))
    email = f"{local}{index}@{rnd.choice(EMAIL_DOMAINS)}"
    dob = (rnd.randint(1945, 2005), rnd.randint(1, 12), rnd.randint(1, 28)) if rnd.random() < 0.8 else None
    gender = rnd.choice(["m", "f"]) if rnd.random() < 0.85 else ""
    if rnd.random() < 0.88:
        city, code, name, prefix = rnd.choice(US_PLACES)
        area = rnd.choice(US_AREA_CODES)
        phone = f"{area}{rnd.randint(2, 9)}{rnd.randint(0, 99):02d}{rnd.randint(0, 9999):04d}"
        return Person(
            f"C{index:07d}",
            email,
            phone,
            "1",
            first,
            last,
            city,
            code if rnd.random() < 0.6 else name,
            f"{prefix}{rnd.randint(0, 99):02d}",
            rnd.choice(["US", "USA", "United States", "us", ""]),
            dob,
            gender,
        )
    spellings, city, region, postcode, trunk, code, digits = rnd.choice(ABROAD)
    number = trunk + "".join(str(rnd.randint(0, 9)) for _ in range(digits))
    return Person(
        f"C{index:07d}", email, number, code, first, last, city, region, postcode, rnd.choice(spellings), dob, gender
    )


def _messy_email(rnd: random.Random, email: str) -> str:
    style = rnd.random()
    if style < 0.2:
        return email.upper()
    if style < 0.35:
        return f"  {email.title()} "
    if style < 0.42:
        return email + "."
    return email


def _messy_phone(rnd: random.Random, p: Person) -> str:
    n, cc = p.phone_national, p.calling_code
    if cc == "1" and len(n) == 10:
        return rnd.choice(
            [
                f"({n[:3]}) {n[3:6]}-{n[6:]}",
                f"{n[:3]}.{n[3:6]}.{n[6:]}",
                f"+1 {n[:3]} {n[3:6]} {n[6:]}",
                f"1-{n[:3]}-{n[3:6]}-{n[6:]}",
                n,
            ]
        )
    international = n[1:] if n.startswith("0") else n
    return rnd.choice([n, f"+{cc} {international}", f"00{cc}{international}"])


def _messy_dob(rnd: random.Random, dob: tuple[int, int, int] | None) -> str:
    if dob is None:
        return ""
    y, m, d = dob
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return rnd.choice(
        [f"{y:04d}-{m:02d}-{d:02d}", f"{m:02d}/{d:02d}/{y:04d}", f"{d} {months[m - 1]} {y}", f"{y:04d}{m:02d}{d:02d}"]
    )


def _messy_zip(rnd: random.Random, p: Person) -> str:
    if p.calling_code == "1" and p.zip.isdigit():
        if p.zip.startswith("0") and rnd.random() < 0.3:
            return p.zip.lstrip("0")  # a spreadsheet ate the leading zero
        if rnd.random() < 0.25:
            return f"{p.zip}-{rnd.randint(0, 9999):04d}"
    return p.zip


def _csv_text(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def generate(data_dir: Path, *, customers: int = 50_000, seed: int = 7) -> DemoFiles:
    """Write the demo landing zone under `data_dir` and return where each file went.

    Every file draws from the one random stream in turn (the CRM, acme, beta, the opt-outs): the order of the
    calls below is part of the output."""
    rnd = random.Random(seed)
    people = [_person(rnd, i) for i in range(1, customers + 1)]
    landing = data_dir / "landing"
    _write(landing / CRM_FILE, _csv_text(CRM_HEADER, _crm_rows(rnd, people, seed)))
    _write(landing / ACME_FILE, _acme_text(rnd, people))
    _write_parquet(landing / BETA_FILE, BETA_HEADER, _beta_rows(rnd, people))
    _write(landing / SUPPRESSION_FILE, _csv_text(SUPPRESSION_HEADER, _suppression_rows(rnd, people)))
    return DemoFiles(
        f"landing/{CRM_FILE}",
        {"acme_data": f"landing/{ACME_FILE}", "beta_insights": f"landing/{BETA_FILE}"},
        f"landing/{SUPPRESSION_FILE}",
    )


def _lifetime_value(rnd: random.Random) -> str:
    """A customer's lifetime value in USD as CRMs export it: mostly a plain amount, sometimes blank (never
    bought), now and then something that is no number at all (a refund balance, a placeholder)."""
    draw = rnd.random()
    if draw < 0.08:
        return ""
    if draw < 0.09:
        return rnd.choice(["n/a", "-12.50", "$80"])
    return f"{rnd.lognormvariate(4.5, 1.0):.2f}"


def _crm_rows(rnd: random.Random, people: list[Person], seed: int) -> list[list[str]]:
    """The advertiser's CRM export: every customer, messily formatted, and two rows the quarantine must catch.
    Lifetime values draw from a stream of their own, so adding them left every other column as it was."""
    values = random.Random(f"{seed}:ltv_usd")
    rows = []
    for p in people:
        dob = _messy_dob(rnd, p.dob)
        rows.append(
            [
                p.customer_id,
                _messy_email(rnd, p.email) if rnd.random() < 0.95 else "",
                _messy_phone(rnd, p) if rnd.random() < 0.9 else "",
                p.first_name,
                p.last_name,
                p.city,
                p.state,
                _messy_zip(rnd, p),
                p.country,
                dob,
                rnd.choice([p.gender, p.gender.upper(), {"m": "Male", "f": "Female", "": ""}[p.gender]]),
                _lifetime_value(values),
            ]
        )
    rows.append(["C9999998", "not-an-email", "12", "", "", "", "", "", "Narnia", "31/31/1990", "x", "10"])
    rows.append(["", "orphan@example.org", "", "No", "Id", "", "", "", "", "", "", "25.00"])  # no customer id
    return rows


def _acme_text(rnd: random.Random, people: list[Person]) -> str:
    """acme_data's delivery: plaintext identifiers and interests, `;`-separated, with unusable and broken rows."""
    acme = _partner_rows(
        rnd,
        people,
        share=0.45,
        strangers=int(len(people) * 0.2),
        make_row=lambda p: [
            _messy_email(rnd, p.email) if rnd.random() < 0.85 else "",
            _messy_phone(rnd, p) if rnd.random() < 0.7 else "",
            p.first_name.upper(),
            p.last_name,
            _messy_zip(rnd, p),
            rnd.choice(INTERESTS),
            rnd.choice(AGE_BANDS),
        ],
    )
    acme.append(["", "", "Ghost", "Row", "00000", "travel", "25-34"])  # no usable identifier
    acme.append(["", "n/a", "Bad", "Phone", "", "travel", "18-24"])
    text = _csv_text(ACME_HEADER, acme, ";")
    return text + "broken;row;with;too;many;columns;here;and;more\n"


def _beta_rows(rnd: random.Random, people: list[Person]) -> list[list[str]]:
    """beta_insights' delivery: hashed emails, phones and segments, and one row whose digest is not one."""
    beta = _partner_rows(
        rnd,
        people,
        share=0.35,
        strangers=int(len(people) * 0.15),
        make_row=lambda p: [
            _sha256(p.email) if rnd.random() < 0.85 else "",
            _messy_phone(rnd, p) if rnd.random() < 0.6 else "",
            rnd.choice(["US", "USA", "United States"]) if p.calling_code == "1" else p.country,
            rnd.choice(BETA_SEGMENTS),
            rnd.choice(PROPENSITY),
        ],
    )
    beta.append(["not-a-digest", "", "US", "pet_owner", "high"])
    return beta


def _suppression_rows(rnd: random.Random, people: list[Person]) -> list[list[str]]:
    """The opt-outs: about one customer in 150 (at least one), as messily written as the rest."""
    optouts = [p for p in rnd.sample(people, k=max(1, len(people) // 150))]
    return [
        [_messy_email(rnd, p.email), _messy_phone(rnd, p) if rnd.random() < 0.5 else "", p.country] for p in optouts
    ]


def _partner_rows(
    rnd: random.Random, people: list[Person], *, share: float, strangers: int, make_row: Callable[[Person], list[str]]
) -> list[list[str]]:
    """Rows for a share of the advertiser's customers plus people the advertiser does not know."""
    known = rnd.sample(people, k=int(len(people) * share))
    others = [_person(rnd, 10_000_000 + i) for i in range(strangers)]
    rows = [make_row(p) for p in known + others]
    rnd.shuffle(rows)
    return rows


def _sha256(text: str) -> str:
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()


def _write_parquet(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".csv.tmp")
    staging.write_text(_csv_text(header, rows), encoding="utf-8")
    tmp = path.with_suffix(".tmp")
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM read_csv('{staging}', all_varchar = true, header = true)) TO '{tmp}' (FORMAT parquet)"
        )
    finally:
        con.close()
    staging.unlink()
    tmp.replace(path)
