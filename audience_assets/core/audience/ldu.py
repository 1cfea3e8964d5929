"""Limited Data Use in the upload payload: the three fields Meta's schema takes, their values per row.

Meta's customer-list payload carries LDU per record: `DATA_PROCESSING_OPTIONS` (`["LDU"]`, or `[]` for none),
`DATA_PROCESSING_OPTIONS_COUNTRY` and `DATA_PROCESSING_OPTIONS_STATE` (0 and 0: Meta geolocates; 1 and
1000-1013: the United States and a state). An audience with `data_processing` sends the three fields on every
row, LDU or not; one without sends exactly what it did before. The values travel through the plan as text
(`'["LDU"]'`, `'1'`, `'1000'`) and leave as JSON (an array and two numbers).
"""

from __future__ import annotations

import hashlib

from audience_assets.core.config.audiences import DataProcessing
from audience_assets.core.duck import ident, literal

OPTIONS, COUNTRY, STATE = "DATA_PROCESSING_OPTIONS", "DATA_PROCESSING_OPTIONS_COUNTRY", "DATA_PROCESSING_OPTIONS_STATE"
FIELDS = (OPTIONS, COUNTRY, STATE)
LDU, NONE = '["LDU"]', "[]"
STATES = tuple(str(code) for code in range(1000, 1014))


def consent_alias(column: str) -> str:
    """The customers table's column for a first-party consent column: named by a digest of the column's name
    (stable whatever other columns are added), holding SHA-256 of the lower-cased, trimmed value, so the
    staged table keeps no plaintext and LDU is decided by comparing digests."""
    return "aa_consent_" + hashlib.sha256(column.encode()).hexdigest()[:12]


def consent_value_sql(cell: str) -> str:
    """How a consent cell is stored: the digest `field_sql` compares with."""
    return f"sha256(lower(trim(coalesce({cell}, ''))))"


def field_sql(processing: DataProcessing) -> list[str]:
    """SELECT expressions (over the customers table) giving the three fields as text, named as Meta names them."""
    if processing.column:
        digests = ", ".join(literal(hashlib.sha256(v.strip().lower().encode()).hexdigest()) for v in processing.values)
        is_ldu = f"{consent_alias(processing.column)} IN ({digests})"
    else:
        is_ldu = "TRUE"
    return [
        f"CASE WHEN {is_ldu} THEN {literal(LDU)} ELSE {literal(NONE)} END AS {ident(OPTIONS)}",
        f"CASE WHEN {is_ldu} THEN '{processing.country}' ELSE '0' END AS {ident(COUNTRY)}",
        f"CASE WHEN {is_ldu} THEN '{processing.state}' ELSE '0' END AS {ident(STATE)}",
    ]


def bad_cell_sql(field: str, cell: str) -> str:
    """SQL true for a cell Meta would not accept in this field (the outbound check)."""
    allowed = {OPTIONS: (LDU, NONE), COUNTRY: ("0", "1"), STATE: ("0", *STATES)}[field]
    return f"{cell} NOT IN ({', '.join(literal(v) for v in allowed)})"
