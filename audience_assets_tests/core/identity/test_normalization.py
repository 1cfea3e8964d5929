"""Meta's normalization rules: a table of messy inputs with the values Meta expects, and the DuckDB SQL
path agreeing with the pure-Python reference on that table and on generated inputs."""

from __future__ import annotations

import hashlib
from importlib.resources import files

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience_assets.core.identity import META_KEYS, meta_value, normalize, rules, sha256
from audience_assets.core.identity import sql as idsql
from audience_assets.core.identity.reference import normalize_with_reason
from audience_assets.core.identity.rules import SOURCE_COLUMN

# (key, raw value, row country, normalized value Meta expects; "" = unusable)
TABLE = [
    ("EMAIL", " John.Doe@Gmail.COM ", None, "john.doe@gmail.com"),
    ("EMAIL", "mary@example.com", None, "mary@example.com"),
    ("EMAIL", "mary@example.com.", None, "mary@example.com"),
    ("EMAIL", "ÉLODIE@exemple.fr", None, "élodie@exemple.fr"),
    ("EMAIL", "Jörg@Bücher.DE", None, "jörg@bücher.de"),  # IDN: lower-cased as written, never converted
    ("EMAIL", "jorg@XN--BCHER-KVA.de", None, "jorg@xn--bcher-kva.de"),  # punycode stays punycode
    ("EMAIL", "a@b", None, ""),
    ("EMAIL", "x y@z.com", None, ""),
    ("EMAIL", "a@@b.com", None, ""),
    ("EMAIL", "not-an-email", None, ""),
    ("EMAIL", "   ", None, ""),
    ("PHONE", "+1 (555) 987-6543", "us", "15559876543"),
    ("PHONE", "(555) 987-6543", "us", "15559876543"),
    ("PHONE", "555.987.6543 ext 12", "us", "15559876543"),
    ("PHONE", "1-555-987-6543", "us", "15559876543"),
    ("PHONE", "0044 20 7946 0958", "us", "442079460958"),
    ("PHONE", "020 7946 0958", "gb", "442079460958"),
    ("PHONE", "07700 900123", "gb", "447700900123"),
    ("PHONE", "+33 6 12 34 56 78", "us", "33612345678"),
    ("PHONE", "12", "us", ""),
    ("PHONE", "n/a", "us", ""),
    ("FN", "  Mary-Kate ", None, "marykate"),
    ("FN", "José", None, "josé"),
    ("FN", "Zoë", None, "zoë"),
    ("FN", "D'Andre", None, "dandre"),
    ("LN", "O'Brien", None, "obrien"),
    ("LN", "Smith-Jones", None, "smithjones"),
    ("LN", "van der Berg", None, "vanderberg"),
    ("FI", "Élodie", None, "e"),
    ("CT", "San Francisco", None, "sanfrancisco"),
    ("CT", "São Paulo", None, "saopaulo"),
    ("CT", "St. Louis", None, "stlouis"),
    ("ST", "California", "us", "ca"),
    ("ST", "ca", "us", "ca"),
    ("ST", " N.Y. ", "us", "ny"),
    ("ZIP", "94103-1234", "us", "94103"),
    ("ZIP", "02139", "us", "02139"),
    ("ZIP", "SW1A 1AA", "gb", "sw1a1"),
    ("COUNTRY", "United States", None, "us"),
    ("COUNTRY", "USA", None, "us"),
    ("COUNTRY", "Deutschland", None, "de"),
    ("COUNTRY", "Narnia", None, ""),
    ("DOBY", "1990-07-04", None, "1990"),
    ("DOBY", "04.07.1990", None, "1990"),
    ("DOBY", "31/31/1990", None, ""),
    ("DOBY", "1890-01-01", None, ""),
    ("DOBM", "1990-07-04", None, "07"),
    ("DOBM", "July", None, "07"),
    ("DOBD", "1990-07-04", None, "04"),
    ("GEN", "Male", None, "m"),
    ("GEN", "F", None, "f"),
    ("GEN", "female ", None, "f"),
    ("GEN", "x", None, ""),
    ("MADID", "AB7A7C55-1C8F-4F3B-9D2B-0E7B2B1C9A11", None, "ab7a7c55-1c8f-4f3b-9d2b-0e7b2b1c9a11"),
    # more email: case, Unicode spaces, plus-addressing kept, malformed shapes
    ("EMAIL", "MARY@EXAMPLE.COM", None, "mary@example.com"),
    ("EMAIL", "\tjohn@example.org\n", None, "john@example.org"),
    ("EMAIL", "\u00a0ana@mail.de\u00a0", None, "ana@mail.de"),
    ("EMAIL", "\ufeffbom@example.com", None, "bom@example.com"),
    ("EMAIL", "user+tag@gmail.com", None, "user+tag@gmail.com"),
    ("EMAIL", "first.last@sub.domain.co.uk", None, "first.last@sub.domain.co.uk"),
    ("EMAIL", "@example.com", None, ""),
    ("EMAIL", "john@", None, ""),
    ("EMAIL", "john@example..com", None, ""),
    ("EMAIL", "john@.example.com", None, ""),
    ("EMAIL", "john doe@example.com", None, ""),
    ("EMAIL", "john@example", None, ""),
    # more phone: national and international notations, extensions, trunk prefixes, junk
    ("PHONE", "(555) 987-6543", None, "5559876543"),  # no country known: Meta's literal rule
    ("PHONE", "001 555 987 6543", "us", "15559876543"),
    ("PHONE", "555-987-6543 x12", "us", "15559876543"),
    ("PHONE", "555-987-6543 #12", "us", "15559876543"),
    ("PHONE", "555.987.6543 EXT. 7", "us", "15559876543"),
    ("PHONE", "1 (555) 987-6543", "us", "15559876543"),
    ("PHONE", "07700900123", "gb", "447700900123"),
    ("PHONE", "+49 30 1234567", "us", "49301234567"),
    ("PHONE", "030 1234567", "de", "49301234567"),
    ("PHONE", "123456", "us", ""),
    ("PHONE", "phone: none", "us", ""),
    ("PHONE", "   ", "us", ""),
    # more names: accents kept, punctuation and spaces dropped
    ("FN", "ÉLODIE", None, "élodie"),
    ("FN", "  Jean-Luc ", None, "jeanluc"),
    ("FN", "Mary Anne", None, "maryanne"),
    ("FN", "123", None, ""),
    ("FN", "SØREN", None, "søren"),
    ("LN", "O\u2019Connor", None, "oconnor"),
    ("LN", "Müller", None, "müller"),
    ("LN", "St. John", None, "stjohn"),
    ("LN", "Da Silva", None, "dasilva"),
    ("FI", "josé", None, "j"),
    ("FI", "Zoë", None, "z"),
    ("FI", "  mary", None, "m"),
    ("FI", "", None, ""),
    # city: a-z only
    ("CT", "NEW YORK", None, "newyork"),
    ("CT", "Saint-Étienne", None, "saintetienne"),
    ("CT", "Zürich", None, "zurich"),
    ("CT", "  ", None, ""),
    # state: US names to codes
    ("ST", "New York", "us", "ny"),
    ("ST", "TX", "us", "tx"),
    ("ST", "texas", "us", "tx"),
    ("ST", "Massachusetts", "us", "ma"),
    ("ST", "Calif.", "us", "ca"),  # the common abbreviation is in the state table
    ("ST", "Narnia", "us", ""),
    # ZIP / postcode by country
    ("ZIP", "94103", "us", "94103"),
    ("ZIP", "941031234", "us", "94103"),
    ("ZIP", "8540", "us", "08540"),
    ("ZIP", "EC1A 1BB", "gb", "ec1a1"),
    ("ZIP", "M1 1AE", "gb", "m11"),
    ("ZIP", "ABCDE", "us", ""),
    # country spellings to alpha-2
    ("COUNTRY", "us", None, "us"),
    ("COUNTRY", "U.S.A.", None, "us"),
    ("COUNTRY", "Great Britain", None, "gb"),
    ("COUNTRY", "United Kingdom", None, "gb"),
    ("COUNTRY", "DEU", None, "de"),
    ("COUNTRY", "Brasil", None, "br"),
    ("COUNTRY", "", None, ""),
    # dates of birth in common formats
    ("DOBY", "12/25/1985", None, "1985"),
    ("DOBM", "12/25/1985", None, "12"),
    ("DOBD", "12/25/1985", None, "25"),
    ("DOBM", "25/12/1985", None, "12"),
    ("DOBD", "25/12/1985", None, "25"),
    ("DOBY", "1985-12-25T00:00:00", None, "1985"),
    ("DOBY", "19851225", None, "1985"),
    ("DOBM", "December", None, "12"),
    ("DOBD", "1990-02-30", None, ""),
    ("DOBD", "2024-02-29", None, "29"),
    # gender
    ("GEN", "M", None, "m"),
    ("GEN", "male", None, "m"),
    ("GEN", "FEMALE", None, "f"),
    ("GEN", "", None, ""),
    # device ids: lower-case UUIDs, bare hex reformatted, zeroed ids refused
    ("MADID", "ab7a7c551c8f4f3b9d2b0e7b2b1c9a11", None, "ab7a7c55-1c8f-4f3b-9d2b-0e7b2b1c9a11"),
    ("MADID", "00000000-0000-0000-0000-000000000000", None, ""),
    ("MADID", "not-a-device", None, ""),
]


def sql_cells(rows: list[dict[str, str]], keys: list[str], default_country: str = "US") -> list[dict[str, str]]:
    """The DuckDB path over `rows` (standard column names): one dict of cells per row, in order."""
    columns = sorted({c for r in rows for c in r} | {"country"})
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (rid INTEGER, " + ", ".join(f'"{c}" VARCHAR' for c in columns) + ")")
        con.executemany(
            f"INSERT INTO t VALUES ({', '.join('?' * (len(columns) + 1))})",
            [[i, *(r.get(c) for c in columns)] for i, r in enumerate(rows)],
        )
        idsql.install(con)
        query = idsql.meta_cells_query(con, "t", keys=keys, default_country=default_country, keep=["rid"])
        result = con.execute(
            f"SELECT rid, {', '.join(f'{chr(34)}{k}{chr(34)}' for k in keys)} FROM ({query}) ORDER BY rid"
        ).fetchall()
        # `<KEY>__present` (computed without the digest) says exactly whether the cell is non-empty
        mismatches = con.execute(
            f"SELECT count(*) FROM ({query}) WHERE "
            + " OR ".join(f'"{k}__present" IS DISTINCT FROM ("{k}" <> {chr(39)}{chr(39)})' for k in keys)
        ).fetchall()[0][0]
        assert mismatches == 0
    finally:
        con.close()
    return [dict(zip(keys, r[1:])) for r in result]


def python_cells(row: dict[str, str], keys: list[str], default_country: str = "us") -> dict[str, str]:
    country = normalize("COUNTRY", row.get("country") or "") or default_country
    cells = {k: meta_value(k, row.get(SOURCE_COLUMN[k]) or "", country=country) for k in keys if k != "COUNTRY"}
    if "COUNTRY" in keys:
        cells["COUNTRY"] = sha256(country)
    return cells


@pytest.mark.parametrize(("key", "raw", "country", "expected"), TABLE)
def test_reference_normalizes_as_meta_expects(key, raw, country, expected):
    assert normalize(key, raw, country=country) == expected
    value = meta_value(key, raw, country=country)
    assert value == (
        ""
        if not expected
        else expected
        if key in ("MADID", "EXTERN_ID")
        else hashlib.sha256(expected.encode()).hexdigest()
    )


def test_the_table_is_large():
    assert len(TABLE) >= 100


def test_a_digest_is_passed_through_never_hashed_twice():
    digest = sha256("mary@example.com")
    assert meta_value("EMAIL", digest.upper()) == digest and meta_value("PHONE", f" {digest} ") == digest
    assert sql_cells([{"email": digest.upper(), "phone": digest}], ["EMAIL", "PHONE"])[0] == {
        "EMAIL": digest,
        "PHONE": digest,
    }


def test_meta_documentation_vectors():
    # developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences#hash
    assert meta_value("EMAIL", "  Mary@Example.com ") == sha256("mary@example.com")
    assert meta_value("PHONE", "+1 (555) 987-6543", country="us") == sha256("15559876543")


def test_sql_agrees_with_the_reference_on_the_table():
    cases = [(key, {SOURCE_COLUMN[key]: raw, "country": country or ""}) for key, raw, country, _ in TABLE]
    cases = [(key, row) for key, row in cases if key != "COUNTRY"]
    keys = sorted({key for key, _ in cases})
    for (key, row), cells in zip(cases, sql_cells([row for _, row in cases], keys), strict=True):
        assert cells[key] == python_cells(row, [key])[key], (key, row)


MESSY = st.text(alphabet=st.sampled_from(list("aAéÉ0159 +-().@'_/,ßİıœ\u00a0\u200b\tçñøZz#")), max_size=24)
KEYS = [k for k in META_KEYS if k not in ("LOOKALIKE_VALUE", "EXTERN_ID", "COUNTRY")]


# Each example is one DuckDB query whose cost hardly depends on its row count: 20 examples of up to 100 rows test
# more rows than 60 of up to 25, in a third of the time.
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "email": MESSY,
                "phone": st.one_of(MESSY, st.from_regex(r"\+?[0-9 ()\-.]{6,18}", fullmatch=True)),
                "first_name": MESSY,
                "last_name": MESSY,
                "city": MESSY,
                "state": MESSY,
                "zip": MESSY,
                "dob": st.one_of(
                    MESSY, st.from_regex(r"[0-3]?[0-9][/.\-][01]?[0-9][/.\-](19|20)?[0-9]{2}", fullmatch=True)
                ),
                "gender": MESSY,
                "madid": MESSY,
                "country": st.sampled_from(["", "US", "usa", "United Kingdom", "gb", "DE", "France", "Narnia", "br"]),
            }
        ),
        min_size=1,
        max_size=100,
    )
)
def test_sql_agrees_with_the_reference_on_generated_rows(rows):
    keys = [*KEYS, "COUNTRY"]
    for row, cells in zip(rows, sql_cells(rows, keys)):
        assert cells == python_cells(row, keys), row


def test_the_shipped_letter_class_is_the_running_pythons():
    """The precomputed class must be exactly what this Python's unicodedata gives, or the SQL path and
    the reference would disagree on some letters."""
    import unicodedata

    rules.letter_class.cache_clear()
    assert rules.letter_class() == rules.compute_letter_class()
    shipped_version = (
        (files("audience_assets.core.identity") / "data" / rules.LETTER_CLASS_FILE).read_text().split("\n")[0]
    )
    assert shipped_version == unicodedata.unidata_version  # else every process pays the full scan


CONTROL_CASES = [
    ("EMAIL", "ann\x00@example.com"),
    ("EMAIL", "ann@exa\x07mple.com"),
    ("PHONE", "555\x1b0100"),
    ("FN", "An\x7fna"),
    ("CT", "Ber\x85lin"),
    ("EXTERN_ID", "C-\x0012"),
]


def sql_reasons(rows: list[dict[str, str]], key: str) -> list[tuple[str, str]]:
    """(cell, reason) per row from the DuckDB path."""
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (rid INTEGER, v VARCHAR, country VARCHAR)")
        con.executemany("INSERT INTO t VALUES (?, ?, ?)", [[i, r["v"], "us"] for i, r in enumerate(rows)])
        con.execute(f'CREATE VIEW s AS SELECT rid, v AS "{SOURCE_COLUMN.get(key, "external_id")}", country FROM t')
        idsql.install(con)
        query = idsql.meta_cells_query(con, "s", keys=[key], default_country="US", keep=["rid"])
        rows = con.execute(f'SELECT "{key}", "{key}__reason" FROM ({query}) ORDER BY rid').fetchall()
        return [tuple(r) for r in rows]
    finally:
        con.close()


@pytest.mark.parametrize(("key", "value"), CONTROL_CASES)
def test_control_characters_make_an_identifier_invalid_in_python_and_in_sql(key: str, value: str):
    """NUL and the other C0/C1 control characters (and DEL) inside a value make the identifier invalid with
    the reason "control character", the same in the reference and in DuckDB, also when the value's ends carry
    whitespace that trimming removes."""
    padded = "\t" + value + " \n"
    assert normalize_with_reason(key, value, country="us") == ("", rules.CONTROL_REASON)
    assert normalize_with_reason(key, padded, country="us") == ("", rules.CONTROL_REASON)
    assert sql_reasons([{"v": value}, {"v": padded}], key) == [("", rules.CONTROL_REASON)] * 2


def test_whitespace_at_the_ends_is_trimmed_not_a_control_character():
    assert normalize_with_reason("EMAIL", "\tann@example.com\r\n") == ("ann@example.com", "")
    assert normalize_with_reason("EXTERN_ID", "C-12\n") == ("C-12\n", "")  # the advertiser's id travels as given
    assert sql_reasons([{"v": "\tann@example.com\r\n"}], "EMAIL")[0][1] == ""
