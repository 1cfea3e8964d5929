"""What the sandbox checks of a request, as Meta does, before any state changes: the API version, the
parameters and body, the payload's schema and rows (each row keyed by its valid cells, invalid rows counted
and sampled), the session object, and requested fields. Errors are Graph error envelopes (`GraphError`)."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import string
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from audience_assets.standins.graph_sandbox.cells import VALUE_KEY, valid_cells, valid_value

ALLOWED_SCHEMA_KEYS = (
    "EXTERN_ID,EMAIL,PHONE,GEN,DOBY,DOBM,DOBD,LN,FN,FI,CT,ST,ZIP,MADID,COUNTRY,PARTIALPHONE,PHONEID,STREETNAME,"
    "STREETNUM,STREETTYPE,STREET2ROW,STREETADDRESS,APPUID,PAGEUID,F5FIRST,F5LAST,EMAIL_MD5,PHONE_MD5"
).split(",")
# Limited Data Use (Meta's "Data Processing Options for US Users"): per record, an options array ([] or
# ["LDU"]) and, with it, a country (0 geolocate, 1 USA) and a state (0 geolocate, 1000-1013). Not identifiers.
LDU_FIELDS = ("DATA_PROCESSING_OPTIONS", "DATA_PROCESSING_OPTIONS_COUNTRY", "DATA_PROCESSING_OPTIONS_STATE")
SINGLE_KEY_SCHEMAS = ("EMAIL_SHA256", "PHONE_SHA256", "MOBILE_ADVERTISER_ID", "EXTERN_ID", "UID")
CUSTOMER_FILE_SOURCES = ("USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED")
SUBTYPES = (
    "CUSTOM",
    "WEBSITE",
    "APP",
    "OFFLINE_CONVERSION",
    "CLAIM",
    "PARTNER",
    "MANAGED",
    "VIDEO",
    "LOOKALIKE",
    "ENGAGEMENT",
    "DATA_SET",
    "BAG_OF_ACCOUNTS",
    "STUDY_RULE_AUDIENCE",
    "FOX",
    "MEASUREMENT",
    "REGULATED_CATEGORIES_AUDIENCE",
)
MAX_ROWS_PER_REQUEST = 10_000
MAX_AUDIENCES_PER_ACCOUNT = 500
REPLACE_MAX_USERS = 100_000_000
MAX_INVALID_SAMPLES = 100
VERSION_PATTERN = re.compile(r"^v(\d+)\.0$")


class GraphError(Exception):
    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        error_type: str = "OAuthException",
        is_transient: bool | None = None,
        usage_minutes: int = 0,
        usage_header: bool = True,
    ):
        super().__init__(message)
        self.status, self.code, self.subcode, self.message = status, code, subcode, message
        self.error_type, self.is_transient, self.usage_minutes = error_type, is_transient, usage_minutes
        self.usage_header = usage_header  # an injected throttle may come without one

    def body(self) -> dict:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "fbtrace_id": "A" + "".join(random.choices(string.ascii_letters + string.digits, k=20)),
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.is_transient is not None:
            error["is_transient"] = self.is_transient
        return {"error": error}


def unknown(verb: str, object_id: str) -> GraphError:
    return GraphError(
        400,
        100,
        f"Unsupported {verb.lower()} request. Object with ID '{object_id.split('/')[0]}' does not exist, "
        "cannot be loaded due to missing permissions, or does not support this operation. "
        "Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
        subcode=33,
        error_type="GraphMethodException",
    )


def prepare_rows(params: dict[str, Any]) -> tuple[list[Any], list[str], tuple] | None:
    """(data, schema, `row_keys` of them) for an upload whose payload is already a well-formed multi-key
    payload, else None (the request is checked, and its rows keyed, in order under the lock)."""
    payload = params.get("payload")
    if not isinstance(payload, dict):
        return None
    schema, data = payload.get("schema"), payload.get("data")
    if not (
        isinstance(schema, list)
        and schema
        and all(isinstance(k, str) for k in schema)
        and isinstance(data, list)
        and len(data) <= MAX_ROWS_PER_REQUEST
        and all(isinstance(r, list) and len(r) == len(schema) for r in data)
    ):
        return None
    return data, schema, row_keys(schema, data)


def row_keys(schema: Sequence[str], data: Sequence[Sequence[Any]]) -> tuple[list[str | None], list[Sequence[Any]]]:
    """Per row, its canonical identity (a SHA-256 of its sorted valid `KEY=cell` pairs; None when no cell is
    valid, or when its LOOKALIKE_VALUE is not a valid value), and the rows refused. LOOKALIKE_VALUE is a value,
    never part of an identity."""
    # Two `KEY=cell` strings differ first within their `KEY=` labels (a key name holds no "=", so no label
    # is another's prefix): sorting the labels once orders every row's cells, which are then joined as they come.
    order = sorted((f"{k}=", k, i) for i, k in enumerate(schema) if k != VALUE_KEY and k not in LDU_FIELDS)
    columns = list(zip(*data)) if data else [() for _ in schema]
    cells = [valid_cells(key, columns[i]) for _, key, i in order]
    values_ok = (
        map(valid_value, columns[list(schema).index(VALUE_KEY)]) if VALUE_KEY in schema else itertools.repeat(True)
    )
    keys: list[str | None] = []
    rejected = []
    sha256 = hashlib.sha256
    for row, valid, value_ok in zip(data, zip(*cells) if cells else [() for _ in data], values_ok):
        joined = "|".join(filter(None, valid))
        if joined and value_ok:
            keys.append(sha256(joined.encode("utf-8", "surrogatepass")).hexdigest())
        else:
            keys.append(None)
            rejected.append(row)
    return keys, rejected


def parse_params(query: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    ctype = headers.get("content-type", "")
    if body:
        if "application/json" in ctype:
            try:
                decoded = json.loads(body)
            except ValueError:
                raise GraphError(
                    400, 100, "(#100) Invalid JSON in the request body", error_type="GraphMethodException"
                ) from None
            if not isinstance(decoded, dict):
                raise GraphError(
                    400, 100, "(#100) The request body must be a JSON object", error_type="GraphMethodException"
                )
            params.update(decoded)
        else:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def check_version(
    path: str, min_version: int, max_version: int, *, upgrade_retired: bool = False
) -> tuple[int, list[str], str | None]:
    """(version, path parts after it, X-Ad-Api-Version-Warning or None). A retired version gets 2635, or, with
    `upgrade_retired` (Meta's Marketing API auto-upgrade), is answered as the oldest live version with the
    warning header."""
    parts = [p for p in path.split("/") if p]
    match = VERSION_PATTERN.match(parts[0]) if parts else None
    if not match:
        raise GraphError(
            400,
            2635,
            "(#2635) You are calling a deprecated version of the Ads API. Please update to the latest version.",
        )
    version = int(match.group(1))
    if version < min_version and upgrade_retired:
        warning = f"The call has been auto-upgraded to v{min_version}.0 as v{version}.0 has been deprecated"
        return min_version, parts[1:], warning
    if version < min_version:
        raise GraphError(
            400,
            2635,
            f"(#2635) You are calling a deprecated version of the Ads API: v{version}.0. "
            f"Please update to the latest version: v{max_version}.0.",
        )
    if version > max_version:
        raise GraphError(400, 2635, f"(#2635) Unknown API version v{version}.0.")
    return version, parts[1:], None


def select_fields(
    obj: dict[str, Any], params: dict[str, Any], default: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`id` and the requested fields. An `optional` field is one of the type's fields that this object lacks
    (a lookalike_spec on an audience that is no lookalike): Graph leaves it out of the answer; a field of no
    kind is an error."""
    requested = [f.strip() for f in str(params.get("fields", "")).split(",") if f.strip()] or list(default)
    unknown = [f for f in requested if f not in obj and f not in optional]
    if unknown:
        raise GraphError(
            400, 100, f"(#100) Tried accessing nonexisting field ({unknown[0]})", error_type="GraphMethodException"
        )
    return {"id": obj["id"], **{f: obj[f] for f in requested if f in obj}}


def parse_payload(audience: dict[str, Any], params: dict[str, Any]) -> tuple[list[str], list[list[Any]], str]:
    """The payload's schema and rows, checked as Meta checks them, and its data source ("single" or "multi")."""
    missing = GraphError(400, 100, "(#100) Missing required parameter: payload", error_type="OAuthException")
    raw = json_object(params, "payload", missing)
    schema = raw.get("schema")
    schema_list, data = _payload_schema(schema, raw.get("data"))
    _check_rows(schema_list, data)
    check_data_processing(schema_list, data)
    _check_required_ids(schema_list, raw)
    _check_value_based(audience, schema_list)
    source = "single" if isinstance(schema, str) else "multi"
    _check_data_source(audience, source)
    return schema_list, data, source


def json_object(params: dict[str, Any], name: str, missing: GraphError) -> dict[str, Any]:
    """The parameter `name` as the JSON object it must be (a form field carries it as a JSON string, a JSON body
    already decoded); `missing` is what Meta answers when it is absent."""
    raw = params.get(name)
    if raw in (None, ""):
        raise missing
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise GraphError(400, 100, f"(#100) Param {name} must be a JSON object") from None
    if not isinstance(raw, dict):
        raise GraphError(400, 100, f"(#100) Param {name} must be a JSON object")
    return raw


def _payload_schema(schema: Any, data: Any) -> tuple[list[str], Any]:
    """The schema as a list of known, distinct keys, and the data with a single key's bare values made rows."""
    if isinstance(schema, str):
        if schema not in SINGLE_KEY_SCHEMAS:
            raise GraphError(
                400, 100, f"(#100) Raw PII type is invalid, it should be one of {','.join(SINGLE_KEY_SCHEMAS)}"
            )
        rows = [[d] if not isinstance(d, list) else d for d in (data or [])] if isinstance(data, list) else data
        return [schema], rows
    if isinstance(schema, list) and schema:
        schema_list = [str(s) for s in schema]
        unknown = [s for s in schema_list if s not in [*ALLOWED_SCHEMA_KEYS, "LOOKALIKE_VALUE", *LDU_FIELDS]]
        if unknown:
            raise GraphError(
                400, 100, f"(#100) Raw PII type is invalid, it should be one of {','.join(ALLOWED_SCHEMA_KEYS)}"
            )
        if len(set(schema_list)) != len(schema_list):
            raise GraphError(400, 100, "(#100) Duplicate keys in schema")
        return schema_list, data
    raise GraphError(400, 100, "(#100) Param payload[schema] must be a non-empty list of keys or a key")


def _check_rows(schema: list[str], data: Any) -> None:
    """The data is an array of at most MAX_ROWS_PER_REQUEST rows, each with a value per schema key."""
    if not isinstance(data, list):
        raise GraphError(400, 100, "(#100) Param payload[data] must be an array")
    if len(data) > MAX_ROWS_PER_REQUEST:
        raise GraphError(
            400, 100, f"(#100) Too many users in one request: {len(data)} (the maximum is {MAX_ROWS_PER_REQUEST})"
        )
    for row in data:
        if not isinstance(row, list) or len(row) != len(schema):
            raise GraphError(
                400, 100, f"(#100) Data is missing or does not match schema: every row needs {len(schema)} values"
            )


def _check_required_ids(schema: list[str], raw: dict[str, Any]) -> None:
    """App-scoped and page-scoped user ids are only meaningful with the app_ids or page_ids they belong to."""
    if ("UID" in schema or "APPUID" in schema) and not raw.get("app_ids"):
        raise GraphError(400, 100, "(#100) app_ids is required for UID and APPUID")
    if "PAGEUID" in schema and not raw.get("page_ids"):
        raise GraphError(400, 100, "(#100) page_ids is required for PAGEUID")


def _check_value_based(audience: dict[str, Any], schema: list[str]) -> None:
    """A value-based audience takes LOOKALIKE_VALUE in every payload, and no other audience takes it."""
    if audience["is_value_based"] and "LOOKALIKE_VALUE" not in schema:
        raise GraphError(400, 100, "(#100) Value-Based Custom Audience requires LOOKALIKE_VALUE attribute.")
    if not audience["is_value_based"] and "LOOKALIKE_VALUE" in schema:
        raise GraphError(400, 100, "(#100) LOOKALIKE_VALUE is only allowed for value-based custom audiences.")


def _check_data_source(audience: dict[str, Any], source: str) -> None:
    """An audience keeps the data source (single or multi key) of its first payload: the other is refused."""
    if audience["data_source"] and audience["data_source"] != source:
        raise GraphError(
            400,
            2650,
            "(#2650) Failed to update the custom audience: This audience was created from "
            f"data source FILE_IMPORTED.{'MULTI_HASHES' if source == 'single' else 'HASHES_OR_USER_IDS'}, "
            "which does not support this data type.",
        )


def split_rows(
    schema: list[str], data: list[list[Any]], prepared: tuple | None
) -> tuple[list[str], int, dict[str, str], list[Any] | None]:
    """The row keys of the valid rows, the number of invalid rows, up to 100 samples of those
    (`{"<the entry as sent>": "<why>"}`, `{}` when every row is valid), and the valid rows' LOOKALIKE_VALUEs in
    the order of their keys (None when the schema has none)."""
    if prepared is not None and prepared[0] is data and prepared[1] == schema:
        keys, rejected = prepared[2]
    else:
        keys, rejected = row_keys(schema, data)
    samples: dict[str, str] = {}
    for row in rejected:
        if len(samples) >= MAX_INVALID_SAMPLES:
            break
        samples[",".join(str(cell) for cell in row)] = _why(schema, row)
    at = schema.index(VALUE_KEY) if VALUE_KEY in schema else None
    values = None if at is None else [row[at] for row, key in zip(data, keys) if key is not None]
    return [k for k in keys if k is not None], len(rejected), samples, values


def _why(schema: list[str], row: list[Any]) -> str:
    """Why a row was refused, for its sample: its value when that is what is wrong (the row may identify
    someone), else the identifying cells it sent (none of them valid)."""
    if VALUE_KEY in schema and not valid_value(row[schema.index(VALUE_KEY)]):
        return "invalid value for LOOKALIKE_VALUE (not a non-negative number)"
    sent = [k for k, c in zip(schema, row) if c not in (None, "") and k != VALUE_KEY]
    if sent:
        return f"invalid value for {', '.join(sent)}"
    return "no identifying field is given" if any(c not in (None, "") for c in row) else "every field is empty"


def parse_session(params: dict[str, Any], required: bool) -> dict[str, Any] | None:
    raw = params.get("session")
    if raw in (None, ""):
        if required:
            raise GraphError(400, 100, "(#100) Missing required parameter: session")
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise GraphError(400, 100, "(#100) Param session must be a JSON object") from None
    if not isinstance(raw, dict):
        raise GraphError(400, 100, "(#100) Param session must be a JSON object")
    session_id, seq, last = raw.get("session_id"), raw.get("batch_seq"), raw.get("last_batch_flag")
    if not isinstance(session_id, int) or isinstance(session_id, bool) or not 0 < session_id < 2**63:
        raise GraphError(400, 100, "(#100) Param session[session_id] must be a positive 64-bit integer")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1):
        raise GraphError(400, 100, "(#100) Param session[batch_seq] must be a positive integer")
    if last is not None and not isinstance(last, bool):
        raise GraphError(400, 100, "(#100) Param session[last_batch_flag] must be a boolean")
    total = raw.get("estimated_num_total")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        raise GraphError(400, 100, "(#100) Param session[estimated_num_total] must be a non-negative integer")
    return {"session_id": str(session_id), "batch_seq": seq, "last": bool(last)}


def check_data_processing(schema: list[str], data: list[list[Any]]) -> None:
    """The LDU fields' shape and values, row by row: the options an array of at most "LDU"; country and state
    integers, 0/0 (geolocate) or 1 with a state code 1000-1013, and only alongside the options."""
    present = [f for f in LDU_FIELDS if f in schema]
    if not present:
        return
    if LDU_FIELDS[0] not in present:
        raise GraphError(400, 100, "(#100) DATA_PROCESSING_OPTIONS_COUNTRY/_STATE need DATA_PROCESSING_OPTIONS")
    at = {f: schema.index(f) for f in present}
    for row in data:
        options = row[at[LDU_FIELDS[0]]]
        if not isinstance(options, list) or any(o != "LDU" for o in options):
            raise GraphError(400, 100, '(#100) DATA_PROCESSING_OPTIONS must be an array: [] or ["LDU"]')
        country = row[at[LDU_FIELDS[1]]] if LDU_FIELDS[1] in at else 0
        state = row[at[LDU_FIELDS[2]]] if LDU_FIELDS[2] in at else 0
        if not (isinstance(country, int) and isinstance(state, int)) or isinstance(country, bool):
            raise GraphError(400, 100, "(#100) DATA_PROCESSING_OPTIONS_COUNTRY and _STATE must be integers")
        if (country, state) != (0, 0) and not (country == 1 and 1000 <= state <= 1013):
            raise GraphError(400, 100, f"(#100) Invalid data processing location: country {country}, state {state}")
