"""Contract tests for the Graph API sandbox (`audience_assets.standins.graph_sandbox`).

Each test checks one rule of Meta's documentation (the Custom Audience, users, usersreplace and session
references, the Graph API error-handling and rate-limiting guides, and answers observed in public SDK
issues: endpoints and wire format, limits, sessions, error codes and usage headers) against
the exact answer the sandbox gives: HTTP status, the Graph error envelope (`type`, `code`,
`error_subcode`, `fbtrace_id`) and the success bodies. The sandbox is driven through its in-process
httpx transport with a plain `httpx.Client`, so every test sees the raw response (no client logic in
between); one test uses the real loopback HTTP server for the dropped-connection fault.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import time
from typing import Any

import httpx
import pytest

from audience_assets.standins.graph_sandbox import Faults, GraphSandbox, SandboxConfig
from audience_assets.standins.graph_sandbox import validation as sandbox_module

TOKEN = "sandbox-token"
ACCOUNT = "act_1000000001"
OTHER_ACCOUNT = "act_2000000002"
NARROW_TOKEN = "narrow-token"  # may use OTHER_ACCOUNT only
EXPIRED_TOKEN = "expired-token"
APP_SECRET = "contract-app-secret"
CREATE = {"subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"}


# ##### HELPERS


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def member_key(**cells: Any) -> str:
    """The sandbox's documented row identity: sha256 over the sorted `KEY=value` pairs of the valid cells."""
    return sha("|".join(sorted(f"{k}={v}" for k, v in cells.items())))


class Clock:
    """An injectable clock (seconds), moved by hand."""

    def __init__(self, now: float = 1_750_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


TODAY = dt.date(2026, 12, 3)


def config(**changes: Any) -> SandboxConfig:
    base = dict(
        tokens={TOKEN: ["*"], NARROW_TOKEN: [OTHER_ACCOUNT], EXPIRED_TOKEN: ["*"]},
        ad_accounts={
            ACCOUNT: {"name": "main", "tos_accepted": True},
            OTHER_ACCOUNT: {"name": "other", "tos_accepted": True},
        },
        expired_tokens=[EXPIRED_TOKEN],
        today=TODAY,  # the versions answered are those live on this date (v25.0 to v27.0)
    )
    base.update(changes)
    return SandboxConfig(**base)


class Api:
    """Raw Graph calls against one sandbox through its in-process transport."""

    def __init__(self, sandbox: GraphSandbox):
        self.sandbox = sandbox
        self.http = httpx.Client(transport=sandbox.transport(), base_url="http://127.0.0.1")

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = TOKEN,
        version: str | None = "v25.0",
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = f"/{version}/{path}" if version else f"/{path}"
        all_headers = {"Authorization": f"Bearer {token}"} if token else {}
        all_headers.update(headers or {})
        return self.http.request(method, url, params=params, json=json, data=data, content=content, headers=all_headers)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.call("POST", path, json=body, **kw)

    def delete(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.call("DELETE", path, json=body, **kw)

    def create(self, name: str = "contract audience", account: str = ACCOUNT, **fields: Any) -> str:
        response = self.post(f"{account}/customaudiences", {"name": name, **CREATE, **fields})
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def users(
        self,
        audience_id: str,
        rows: list,
        schema: Any = ("EMAIL",),
        session: dict | None = None,
        method: str = "POST",
        **payload_extra: Any,
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "payload": {"schema": list(schema) if isinstance(schema, tuple) else schema, "data": rows, **payload_extra}
        }
        if session is not None:
            body["session"] = session
        return self.call(method, f"{audience_id}/users", json=body)

    def replace(
        self,
        audience_id: str,
        rows: list,
        session_id: int,
        batch_seq: int | None,
        last: bool = False,
        schema: tuple[str, ...] = ("EMAIL",),
    ) -> httpx.Response:
        session: dict[str, Any] = {"session_id": session_id, "last_batch_flag": last}
        if batch_seq is not None:
            session["batch_seq"] = batch_seq
        return self.post(
            f"{audience_id}/usersreplace", {"payload": {"schema": list(schema), "data": rows}, "session": session}
        )

    def status(self, audience_id: str) -> dict[str, Any]:
        response = self.get(audience_id, params={"fields": "operation_status"})
        assert response.status_code == 200, response.text
        return response.json()["operation_status"]


def assert_error(
    response: httpx.Response,
    status: int,
    code: int,
    subcode: int | None = None,
    *,
    error_type: str = "OAuthException",
    message: str | None = None,
) -> dict[str, Any]:
    """The Graph error envelope, exactly: JSON, a single `error` object with message, type, code,
    error_subcode only when there is one, and an fbtrace_id of 11-27 characters."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert error["code"] == code, error
    assert error["type"] == error_type, error
    if subcode is None:
        assert "error_subcode" not in error, error
    else:
        assert error["error_subcode"] == subcode, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fbtrace_id"], str) and 11 <= len(error["fbtrace_id"]) <= 27
    if message is not None:
        assert message in error["message"], error["message"]
    return error


def assert_upload(
    response: httpx.Response, audience_id: str, *, received: int, invalid: int = 0, session_id: int | None = None
) -> dict[str, Any]:
    """The users/usersreplace success body: ids as numeric strings, cumulative counters, samples object."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"audience_id", "session_id", "num_received", "num_invalid_entries", "invalid_entry_samples"}
    assert body["audience_id"] == audience_id
    assert isinstance(body["session_id"], str) and body["session_id"].isdigit()
    if session_id is not None:
        assert body["session_id"] == str(session_id)
    assert body["num_received"] == received
    assert body["num_invalid_entries"] == invalid
    assert isinstance(body["invalid_entry_samples"], dict)
    return body


def usage(response: httpx.Response) -> dict[str, Any]:
    """The single custom_audience entry of X-Business-Use-Case-Usage for ACCOUNT."""
    header = json.loads(response.headers["x-business-use-case-usage"])
    assert list(header) == [ACCOUNT.removeprefix("act_")]
    [entry] = header[ACCOUNT.removeprefix("act_")]
    return entry


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> GraphSandbox:
    sb = GraphSandbox(config=config(), clock=clock)
    yield sb
    sb.close()


@pytest.fixture
def api(sandbox: GraphSandbox) -> Api:
    return Api(sandbox)


def emails(*names: str) -> list[list[str]]:
    return [[sha(f"{n}@example.com")] for n in names]


def email_keys(*names: str) -> set[str]:
    return {member_key(EMAIL=sha(f"{n}@example.com")) for n in names}


# ##### ERROR ENVELOPE AND WIRE FORMAT


def test_error_envelope_is_json_with_a_fresh_fbtrace_id(api: Api):
    """Every error is `{"error": {message, type, code, [error_subcode], fbtrace_id}}` as JSON; the trace id
    identifies one request, so two failures carry two ids."""
    first = assert_error(api.get("999"), 400, 100, 33, error_type="GraphMethodException")
    second = assert_error(api.get("999"), 400, 100, 33, error_type="GraphMethodException")
    assert first["fbtrace_id"] != second["fbtrace_id"]


def test_malformed_json_bodies_are_parameter_errors(api: Api):
    """A JSON body must parse and be an object; otherwise code 100, before anything else is looked at."""
    assert_error(
        api.call(
            "POST", f"{ACCOUNT}/customaudiences", content=b"{not json", headers={"content-type": "application/json"}
        ),
        400,
        100,
        error_type="GraphMethodException",
    )
    assert_error(
        api.call("POST", f"{ACCOUNT}/customaudiences", content=b"[1, 2]", headers={"content-type": "application/json"}),
        400,
        100,
        error_type="GraphMethodException",
        message="must be a JSON object",
    )


def test_form_encoded_params_carry_objects_as_json_strings(api: Api, sandbox: GraphSandbox):
    """Graph accepts form-encoded params whose object values (payload, session) are JSON strings."""
    response = api.call("POST", f"{ACCOUNT}/customaudiences", data={"name": "form audience", **CREATE})
    audience_id = response.json()["id"]
    payload = json.dumps({"schema": ["EMAIL"], "data": emails("a", "b")})
    session = json.dumps({"session_id": 77, "batch_seq": 1, "last_batch_flag": True})
    response = api.call("POST", f"{audience_id}/users", data={"payload": payload, "session": session})
    assert_upload(response, audience_id, received=2, session_id=77)
    assert sandbox.member_keys(audience_id) == email_keys("a", "b")


def test_post_with_method_override_acts_as_delete_or_get(api: Api, sandbox: GraphSandbox):
    """`POST` + `method=DELETE` is the documented alternative to an HTTP DELETE (and method=GET reads)."""
    audience_id = api.create()
    api.users(audience_id, emails("a", "b", "c"))
    response = api.post(
        f"{audience_id}/users", {"method": "DELETE", "payload": {"schema": ["EMAIL"], "data": emails("a")}}
    )
    assert_upload(response, audience_id, received=1)
    assert sandbox.member_keys(audience_id) == email_keys("b", "c")
    read = api.post(audience_id, {"method": "GET", "fields": "name"})
    assert read.json() == {"id": audience_id, "name": "contract audience"}
    deleted = api.post(f"{ACCOUNT}/customaudiences", {"method": "DELETE"})
    assert_error(deleted, 400, 100, 33, error_type="GraphMethodException", message="Unsupported delete request")


def test_delete_with_a_json_body_removes_members(api: Api, sandbox: GraphSandbox):
    """Removals travel as DELETE with the payload in the body (a 10,000-row query string is how the SDK fails)."""
    audience_id = api.create()
    api.users(audience_id, emails("a", "b", "c"))
    response = api.users(audience_id, emails("a", "c", "never-added"), method="DELETE")
    assert_upload(response, audience_id, received=3)
    assert sandbox.member_keys(audience_id) == email_keys("b")


# ##### API VERSIONS


@pytest.mark.parametrize(
    "path, message",
    [
        ("v24.0/me", "deprecated version of the Ads API: v24.0"),  # expired 2026-11-10
        ("v28.0/me", "Unknown API version v28.0"),  # not released
        ("me", "deprecated version"),  # no version segment at all
        ("v25/me", "deprecated version"),  # versions are vNN.0
    ],
)
def test_unsupported_versions_answer_2635(api: Api, path: str, message: str):
    """Calls outside the live versions (Meta's table, on the sandbox's date) fail with 2635."""
    assert_error(api.call("GET", path, version=None), 400, 2635, message=message)


def test_the_live_versions_are_accepted_and_checked_before_the_token(api: Api):
    """Every live version works; the version is validated before authentication."""
    for version in ("v25.0", "v26.0", "v27.0"):
        assert api.get("me", version=version).status_code == 200
    assert_error(api.get("me", version="v20.0", token=None), 400, 2635)


def test_a_version_retires_on_its_expiration_date(clock: Clock):
    """v25.0 expires on 2027-02-23: answered the day before, refused with 2635 from that day, naming the
    latest version; with Meta's auto-upgrade it is answered as the oldest live one, with the warning header."""
    before = Api(GraphSandbox(config=config(today=dt.date(2027, 2, 22)), clock=clock))
    assert before.get("me", version="v25.0").status_code == 200
    after = Api(GraphSandbox(config=config(today=dt.date(2027, 2, 23)), clock=clock))
    error = assert_error(after.get("me", version="v25.0"), 400, 2635)
    assert "update to the latest version: v27.0" in error["message"]
    upgraded = Api(GraphSandbox(config=config(today=dt.date(2027, 2, 23), upgrade_retired=True), clock=clock))
    response = upgraded.get("me", version="v25.0")
    assert response.status_code == 200
    warning = response.headers["x-ad-api-version-warning"]
    assert warning == "The call has been auto-upgraded to v26.0 as v25.0 has been deprecated"


# ##### AUTHENTICATION


def test_missing_token_is_104(api: Api):
    """No token anywhere: OAuthException 104."""
    assert_error(api.get("me", token=None), 400, 104, message="An access token is required to request this resource.")


def test_unknown_token_is_190_without_subcode(api: Api):
    """A token Graph cannot parse: OAuthException 190, no subcode."""
    assert_error(api.get("me", token="not-a-real-token"), 400, 190, message="Invalid OAuth access token")


def test_expired_token_is_190_463(api: Api):
    """An expired token: 190 with subcode 463 (refresh the token, do not retry)."""
    assert_error(api.get("me", token=EXPIRED_TOKEN), 400, 190, 463, message="Session has expired")


@pytest.mark.parametrize("where", ["header", "query", "form", "json"])
def test_token_is_accepted_from_header_query_form_or_json_body(api: Api, where: str):
    """Graph reads `access_token` from the query, a form or JSON body, or `Authorization: Bearer`."""
    path = f"{ACCOUNT}/customaudiences"
    body = {"name": f"via {where}", **CREATE}
    if where == "header":
        response = api.call("POST", path, json=body)
    elif where == "query":
        response = api.call("POST", path, token=None, params={"access_token": TOKEN}, json=body)
    elif where == "form":
        response = api.call("POST", path, token=None, data={**body, "access_token": TOKEN})
    else:
        response = api.call("POST", path, token=None, json={**body, "access_token": TOKEN})
    assert response.status_code == 200, response.text
    assert api.sandbox.audience_id(f"via {where}") == response.json()["id"]


def test_bearer_header_is_the_token_used_when_both_are_sent(api: Api):
    """The Authorization header decides; a token in the URL is not consulted then."""
    assert api.get("me", params={"access_token": "bogus"}).status_code == 200
    assert_error(api.get("me", token="bogus", params={"access_token": TOKEN}), 400, 190)


def test_me_answers_without_usage_headers(api: Api):
    """GET /me identifies the token's user; it touches no ad account, so no BUC header."""
    response = api.get("me")
    assert response.status_code == 200
    assert set(response.json()) == {"id", "name"}
    assert response.json()["id"] == api.get("me").json()["id"] != api.get("me", token=NARROW_TOKEN).json()["id"]
    assert "x-business-use-case-usage" not in response.headers


class TestAppsecretProof:
    """With "Require App Secret", every call needs appsecret_proof = HMAC-SHA256(app secret, token)."""

    @pytest.fixture
    def api(self, clock: Clock) -> Api:
        return Api(GraphSandbox(config=config(app_secret=APP_SECRET), clock=clock))

    @staticmethod
    def proof(token: str = TOKEN, secret: str = APP_SECRET) -> str:
        return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()

    def test_missing_proof(self, api: Api):
        """Required but absent: (#100) GraphMethodException."""
        assert_error(
            api.get("me"),
            400,
            100,
            error_type="GraphMethodException",
            message="API calls from the server require an appsecret_proof argument",
        )

    @pytest.mark.parametrize(
        "bad", ["0" * 64, "proof-for-another-token", "é" * 64], ids=["zeros", "other-token", "non-ascii"]
    )
    def test_wrong_proof(self, api: Api, bad: str):
        """A proof that is not HMAC-SHA256(app secret, this token) is rejected, whatever its characters."""
        bad = self.proof(token="another-token") if bad == "proof-for-another-token" else bad
        assert_error(
            api.get("me", params={"appsecret_proof": bad}),
            400,
            100,
            error_type="GraphMethodException",
            message="Invalid appsecret_proof provided in the API argument",
        )

    def test_valid_proof_in_query_or_body(self, api: Api):
        """The right proof works from the query string or the JSON body."""
        assert api.get(ACCOUNT, params={"appsecret_proof": self.proof()}).status_code == 200
        response = api.post(f"{ACCOUNT}/customaudiences", {"name": "proved", **CREATE, "appsecret_proof": self.proof()})
        assert response.status_code == 200, response.text

    def test_token_is_checked_before_the_proof(self, api: Api):
        """An unknown token fails as 190 before the proof is looked at."""
        assert_error(api.get("me", token="bogus"), 400, 190)


# ##### OBJECT LOOKUP AND PERMISSIONS


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("object_id", ["act_999", "23859999999999999"])
def test_unknown_objects_are_100_33_naming_the_verb(api: Api, method: str, object_id: str):
    """Unknown ad account or audience: 100/33 GraphMethodException, "Unsupported <verb> request. Object with ID …"."""
    suffix = "customaudiences" if object_id.startswith("act_") and method == "POST" else ""
    path = f"{object_id}/{suffix}" if suffix else object_id
    assert_error(
        api.call(method, path),
        400,
        100,
        33,
        error_type="GraphMethodException",
        message=f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
        "cannot be loaded due to missing permissions, or does not support this operation.",
    )


def test_deleted_audience_answers_like_an_unknown_one(api: Api):
    """DELETE /{id} answers {"success": true}; afterwards the id is unknown (100/33) for reads and uploads."""
    audience_id = api.create()
    response = api.delete(audience_id)
    assert response.status_code == 200 and response.json() == {"success": True}
    assert_error(
        api.get(audience_id), 400, 100, 33, error_type="GraphMethodException", message="Unsupported get request"
    )
    assert_error(api.users(audience_id, emails("a")), 400, 100, 33, error_type="GraphMethodException")
    assert api.sandbox.audience_id("contract audience") is None


@pytest.mark.parametrize(
    "method, edge",
    [("GET", "users"), ("DELETE", "usersreplace"), ("POST", "sessions"), ("PUT", ""), ("GET", "nonsense")],
)
def test_unsupported_operations_on_an_existing_audience(api: Api, method: str, edge: str):
    """Edges or verbs an audience does not support are 100/33 naming the object."""
    audience_id = api.create()
    assert_error(
        api.call(method, f"{audience_id}/{edge}" if edge else audience_id),
        400,
        100,
        33,
        error_type="GraphMethodException",
        message=f"Object with ID '{audience_id}'",
    )


def test_empty_object_path(api: Api):
    """A bare version path addresses no object: 100/33."""
    assert_error(api.get(""), 400, 100, 33, error_type="GraphMethodException")


def test_token_without_rights_on_the_account_is_403_200(api: Api):
    """A token that cannot use the ad account gets (#200) with HTTP 403, for the account and its audiences."""
    assert_error(api.get(ACCOUNT, token=NARROW_TOKEN), 403, 200, message="(#200)")
    assert_error(api.post(f"{ACCOUNT}/customaudiences", {"name": "x", **CREATE}, token=NARROW_TOKEN), 403, 200)
    audience_id = api.create()
    response = api.call(
        "POST", f"{audience_id}/users", token=NARROW_TOKEN, json={"payload": {"schema": ["EMAIL"], "data": emails("a")}}
    )
    assert_error(response, 403, 200, message=f"(#200) The current user can not update audience {audience_id}")
    assert api.sandbox.member_keys(audience_id) == set()
    assert api.get(OTHER_ACCOUNT, token=NARROW_TOKEN).status_code == 200


def test_account_fields(api: Api):
    """GET act_<id> returns `id` plus the requested fields; unknown fields are (#100) errors."""
    assert api.get(ACCOUNT).json() == {"id": ACCOUNT}
    assert api.get(ACCOUNT, params={"fields": "account_id,tos_accepted"}).json() == {
        "id": ACCOUNT,
        "account_id": "1000000001",
        "tos_accepted": {"custom_audience_tos": 1},
    }
    assert_error(
        api.get(ACCOUNT, params={"fields": "id,owner_secret"}),
        400,
        100,
        error_type="GraphMethodException",
        message="nonexisting field (owner_secret)",
    )


# ##### CREATE


def test_create_returns_only_a_numeric_id_and_a_normal_empty_audience(api: Api):
    """Create answers {"id": "<numeric string>"}; the new audience is Normal (200) with counts -1 until data
    arrives."""
    response = api.post(
        f"{ACCOUNT}/customaudiences", {"name": "fresh", "description": "d", "retention_days": 30, **CREATE}
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id"] and isinstance(body["id"], str) and body["id"].isdigit()
    fields = (
        "name,subtype,description,customer_file_source,retention_days,is_value_based,operation_status,"
        "delivery_status,approximate_count_lower_bound,approximate_count_upper_bound"
    )
    audience = api.get(body["id"], params={"fields": fields}).json()
    assert audience == {
        "id": body["id"],
        "name": "fresh",
        "subtype": "CUSTOM",
        "description": "d",
        "customer_file_source": "USER_PROVIDED_ONLY",
        "retention_days": 30,
        "is_value_based": False,
        "operation_status": {"code": 200, "description": "Normal"},
        "delivery_status": {"code": 200, "description": "This audience is ready for use."},
        "approximate_count_lower_bound": -1,
        "approximate_count_upper_bound": -1,
    }
    assert api.get(body["id"]).json() == {"id": body["id"]}  # only id unless fields are asked for


@pytest.mark.parametrize("retention", [0, 180, "90"])
def test_retention_bounds_are_kept(api: Api, retention: Any):
    """retention_days is 0-180, 0 meaning forever (it must not read back as null)."""
    audience_id = api.create(retention_days=retention)
    assert api.get(audience_id, params={"fields": "retention_days"}).json()["retention_days"] == int(retention)


@pytest.mark.parametrize(
    "retention",
    [-1, 181, "abc", "1.5", True, "²"],
    ids=["negative", "over-180", "text", "fraction", "bool", "superscript-digit"],
)
def test_retention_out_of_range_is_rejected(api: Api, retention: Any):
    """retention_days outside the integers 0-180 is a (#100) parameter error."""
    response = api.post(f"{ACCOUNT}/customaudiences", {"name": "r", **CREATE, "retention_days": retention})
    assert_error(response, 400, 100, message="retention_days")


@pytest.mark.parametrize("name", [None, "", "   "])
def test_name_is_required(api: Api, name: Any):
    """name is required and must not be blank."""
    body = {**CREATE} if name is None else {"name": name, **CREATE}
    assert_error(api.post(f"{ACCOUNT}/customaudiences", body), 400, 100, message="name is required")


def test_subtype_must_be_a_known_value_and_defaults_to_custom(api: Api):
    """subtype must be in the SDK enum; omitted, it is CUSTOM."""
    assert_error(
        api.post(f"{ACCOUNT}/customaudiences", {"name": "s", **CREATE, "subtype": "CUSTOMER_LIST"}),
        400,
        100,
        message="subtype must be one of",
    )
    response = api.post(f"{ACCOUNT}/customaudiences", {"name": "default", "customer_file_source": "USER_PROVIDED_ONLY"})
    audience_id = response.json()["id"]
    assert api.get(audience_id, params={"fields": "subtype"}).json()["subtype"] == "CUSTOM"


def test_customer_file_source_is_required_for_custom_and_must_be_in_the_enum(api: Api):
    """CUSTOM audiences need customer_file_source from the 3-value enum ("Missing parameter(s):
    customer_file_source")."""
    assert_error(
        api.post(f"{ACCOUNT}/customaudiences", {"name": "c", "subtype": "CUSTOM"}),
        400,
        100,
        message="Missing parameter(s): customer_file_source",
    )
    assert_error(
        api.post(f"{ACCOUNT}/customaudiences", {"name": "c", "subtype": "CUSTOM", "customer_file_source": "SCRAPED"}),
        400,
        100,
        message="customer_file_source must be one of",
    )
    for source in ("USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY", "BOTH_USER_AND_PARTNER_PROVIDED"):
        assert (
            api.post(
                f"{ACCOUNT}/customaudiences", {"name": source, "subtype": "CUSTOM", "customer_file_source": source}
            ).status_code
            == 200
        )
    website = api.post(f"{ACCOUNT}/customaudiences", {"name": "site", "subtype": "WEBSITE"})
    assert website.status_code == 200  # only customer files need a source


def test_create_without_accepted_terms_is_200_1870090(clock: Clock):
    """An account without accepted Custom Audience terms cannot create: (#200)/1870090 with HTTP 403."""
    api = Api(GraphSandbox(config=config(ad_accounts={ACCOUNT: {"tos_accepted": False}}), clock=clock))
    assert_error(
        api.post(f"{ACCOUNT}/customaudiences", {"name": "t", **CREATE}),
        403,
        200,
        1870090,
        message="Custom Audience Terms Not Accepted",
    )
    assert api.sandbox.audience_id("t") is None
    assert api.get(ACCOUNT, params={"fields": "tos_accepted"}).json()["tos_accepted"] == {}


def test_audience_cap_per_account(api: Api, monkeypatch: pytest.MonkeyPatch):
    """At most 500 customer-file audiences per ad account (cap shrunk to 2 here); deleted ones do not count."""
    monkeypatch.setattr(sandbox_module, "MAX_AUDIENCES_PER_ACCOUNT", 2)
    first = api.create("one")
    api.create("two")
    assert_error(
        api.post(f"{ACCOUNT}/customaudiences", {"name": "three", **CREATE}), 400, 2654, message="maximum number"
    )
    api.delete(first)
    assert api.post(f"{ACCOUNT}/customaudiences", {"name": "three", **CREATE}).status_code == 200
    assert api.post(f"{OTHER_ACCOUNT}/customaudiences", {"name": "elsewhere", **CREATE}).status_code == 200


# ##### LISTING AND PAGING


def test_listing_pages_with_cursors_and_next(api: Api):
    """GET act_<id>/customaudiences pages by `limit` with paging.cursors and a `next` link while more remain;
    only the account's live audiences are listed, with `id` plus the requested fields."""
    ids = [api.create(f"a{i}") for i in range(5)]
    deleted = api.create("gone")
    api.delete(deleted)
    api.create("other account", account=OTHER_ACCOUNT)
    seen, after, pages = [], None, []
    while True:
        params = {"fields": "name", "limit": 2, **({"after": after} if after else {})}
        page = api.get(f"{ACCOUNT}/customaudiences", params=params).json()
        pages.append(page)
        seen += page["data"]
        if "next" not in page["paging"]:
            break
        after = page["paging"]["cursors"]["after"]
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert seen == [{"id": i, "name": f"a{n}"} for n, i in enumerate(ids)]
    assert pages[0]["paging"]["cursors"] == {"before": ids[0], "after": ids[1]}
    assert api.get(f"{ACCOUNT}/customaudiences", params={"after": ids[-1]}).json() == {"data": []}


def test_listing_default_limit_is_25(api: Api):
    """Without `limit` a page holds 25 audiences, each with only its id."""
    for i in range(26):
        api.create(f"n{i}")
    page = api.get(f"{ACCOUNT}/customaudiences").json()
    assert len(page["data"]) == 25 and "next" in page["paging"]
    assert set(page["data"][0]) == {"id"}


@pytest.mark.parametrize("limit", ["abc", "0", "-3"])
def test_listing_rejects_a_bad_limit(api: Api, limit: str):
    """A limit that is not a positive integer is a (#100) error, never a crash."""
    assert_error(
        api.get(f"{ACCOUNT}/customaudiences", params={"limit": limit}),
        400,
        100,
        error_type="GraphMethodException",
        message="limit",
    )


# ##### PAYLOAD VALIDATION


@pytest.fixture
def audience(api: Api) -> str:
    return api.create()


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "Missing required parameter: payload"),
        ({"payload": ""}, "Missing required parameter: payload"),
        ({"payload": "{not json"}, "payload must be a JSON object"),
        ({"payload": [["a"]]}, "payload must be a JSON object"),
        ({"payload": {"schema": "EMAIL", "data": []}}, "Raw PII type is invalid"),
        (
            {"payload": {"schema": ["EMAIL", "SSN"], "data": []}},
            "Raw PII type is invalid, it should be one of EXTERN_ID,EMAIL",
        ),
        ({"payload": {"schema": [], "data": []}}, "non-empty list"),
        ({"payload": {"schema": 5, "data": []}}, "non-empty list"),
        ({"payload": {"data": []}}, "non-empty list"),
        ({"payload": {"schema": ["EMAIL", "EMAIL"], "data": []}}, "Duplicate keys"),
        ({"payload": {"schema": ["EMAIL"], "data": {"0": ["x"]}}}, "payload[data] must be an array"),
        ({"payload": {"schema": ["EMAIL"], "data": "x"}}, "payload[data] must be an array"),
        ({"payload": {"schema": ["EMAIL"]}}, "payload[data] must be an array"),
        (
            {"payload": {"schema": ["EMAIL", "PHONE"], "data": [["a", "b"], ["a"]]}},
            "Data is missing or does not match schema",
        ),
        (
            {"payload": {"schema": ["EMAIL", "PHONE"], "data": [["a", "b", "c"]]}},
            "Data is missing or does not match schema",
        ),
        ({"payload": {"schema": ["EMAIL"], "data": ["not-a-row"]}}, "Data is missing or does not match schema"),
        ({"payload": {"schema": ["APPUID"], "data": [["1"]]}}, "app_ids is required"),
        ({"payload": {"schema": "UID", "data": ["1"]}}, "app_ids is required"),
        ({"payload": {"schema": ["PAGEUID"], "data": [["1"]]}}, "page_ids is required"),
        ({"payload": {"schema": ["EMAIL", "LOOKALIKE_VALUE"], "data": [["", 1]]}}, "only allowed for value-based"),
    ],
)
def test_invalid_payloads_are_100_and_change_nothing(api: Api, audience: str, body: dict, message: str):
    """Every request-level payload rule answers code 100 and leaves members and sessions untouched."""
    response = api.post(f"{audience}/users", body)
    assert_error(response, 400, 100, message=message)
    assert api.sandbox.member_keys(audience) == set()
    assert api.get(f"{audience}/sessions").json() == {"data": []}


def test_at_most_10000_rows_per_request(api: Api, audience: str):
    """More than 10,000 rows in one request is rejected whole; exactly 10,000 is fine."""
    rows = [[sha(f"u{i}")] for i in range(10_001)]
    assert_error(api.users(audience, rows), 400, 100, message="Too many users in one request: 10001")
    assert api.sandbox.member_keys(audience) == set()
    assert_upload(api.users(audience, rows[:10_000]), audience, received=10_000)
    assert len(api.sandbox.member_keys(audience)) == 10_000


def test_single_key_schemas_take_flat_or_one_element_rows(api: Api):
    """Legacy single-key schemas (EMAIL_SHA256, …) accept a flat list of strings or 1-element lists."""
    flat, nested = api.create("flat"), api.create("nested")
    assert_upload(api.users(flat, [sha("a"), sha("b")], schema="EMAIL_SHA256"), flat, received=2)
    assert_upload(api.users(nested, [[sha("a")], [sha("b")]], schema="EMAIL_SHA256"), nested, received=2)
    assert (
        api.sandbox.member_keys(flat)
        == api.sandbox.member_keys(nested)
        == {member_key(EMAIL_SHA256=sha("a")), member_key(EMAIL_SHA256=sha("b"))}
    )


def test_app_and_page_ids_satisfy_uid_keys(api: Api, audience: str):
    """APPUID needs app_ids and PAGEUID needs page_ids; with them the rows are accepted."""
    ok = api.users(audience, [["123", "456"]], schema=("APPUID", "PAGEUID"), app_ids=["1"], page_ids=["2"])
    assert_upload(ok, audience, received=1)


def test_value_based_audiences_require_lookalike_value(api: Api):
    """A value-based audience needs LOOKALIKE_VALUE in the schema (a JSON number, never hashed)."""
    value_based = api.create("vb", is_value_based=True)
    assert_error(
        api.users(value_based, emails("a")),
        400,
        100,
        message="Value-Based Custom Audience requires LOOKALIKE_VALUE attribute.",
    )
    row = [sha("a@example.com"), 44.5]
    assert_upload(api.users(value_based, [row], schema=("EMAIL", "LOOKALIKE_VALUE")), value_based, received=1)
    assert api.sandbox.member_keys(value_based) == email_keys("a")  # the value is data, not identity


def test_single_and_multi_key_data_sources_do_not_mix(api: Api):
    """An audience created from multi-key data refuses single-key data and vice versa (2650, no subcode)."""
    multi, single = api.create("multi"), api.create("single")
    api.users(multi, emails("a"))
    api.users(single, [sha("a")], schema="EMAIL_SHA256")
    assert_error(
        api.users(multi, [sha("b")], schema="EMAIL_SHA256"), 400, 2650, message="created from data source FILE_IMPORTED"
    )
    assert_error(api.users(single, emails("b")), 400, 2650, message="Failed to update the custom audience")


def test_a_rejected_request_leaves_no_trace(api: Api, audience: str):
    """Validation is atomic: a request rejected late (bad session) must not pin the audience's data source."""
    bad_session = api.users(audience, emails("a"), session={"session_id": 0})
    assert_error(bad_session, 400, 100)
    assert_upload(api.users(audience, [sha("a")], schema="EMAIL_SHA256"), audience, received=1)


# ##### PER-CELL VALIDATION: INVALID ENTRIES ARE COUNTED, NOT REJECTED


def test_invalid_cells_count_as_invalid_entries(api: Api, audience: str, sandbox: GraphSandbox):
    """Hashed keys must be "" or 64 lowercase hex; a row with no valid cell is an invalid entry (counted and
    sampled); a row with at least one valid cell is stored under its valid cells."""
    good, phone = sha("good@example.com"), sha("15550000000")
    rows = [
        [good, phone],  # valid
        ["", ""],  # blank: invalid
        [good.upper(), ""],  # uppercase hex: invalid
        [good[:63], ""],  # 63 chars: invalid
        ["raw@example.com", "+1 555 000 0000"],  # unhashed PII: invalid
        [sha("partial@example.com"), "555-0000"],  # one valid cell: stored without the bad phone
        [None, phone],  # null counts as blank
    ]
    body = assert_upload(api.users(audience, rows, schema=("EMAIL", "PHONE")), audience, received=7, invalid=4)
    samples = body["invalid_entry_samples"]
    assert len(samples) == 4
    assert samples[","] == "every field is empty"
    assert samples[f"{good.upper()},"] == "invalid value for EMAIL"
    assert samples["raw@example.com,+1 555 000 0000"] == "invalid value for EMAIL, PHONE"
    assert sandbox.member_keys(audience) == {
        member_key(EMAIL=good, PHONE=phone),
        member_key(EMAIL=sha("partial@example.com")),
        member_key(PHONE=phone),
    }


@pytest.mark.parametrize(
    "key, cell, valid",
    [
        ("MADID", "6f1c2a4e-1b2c-4d3e-8f90-0123456789ab", True),
        ("MADID", "6F1C2A4E-1B2C-4D3E-8F90-0123456789AB", False),  # raw MADIDs are lowercase
        ("MADID", sha("device"), True),
        ("MADID", "not-a-device-id", False),
        ("EXTERN_ID", "CUST-000123", True),  # kept exactly, any non-empty string
        ("EXTERN_ID", 42, True),
        ("EXTERN_ID", "   ", False),
        ("GEN", sha("f"), True),
        ("GEN", "f", False),
        ("COUNTRY", sha("us"), True),
        ("COUNTRY", 1, False),
        ("EMAIL", sha("a") + "\n", False),  # a digest and a line break is not a digest
        ("EMAIL", sha("a") + "|" + sha("b"), False),  # nor are two digests in one cell
    ],
)
def test_cell_rules_per_key(api: Api, audience: str, key: str, cell: Any, valid: bool):
    """Per-key cell rules: MADID raw lowercase UUID or 64-hex, EXTERN_ID any non-blank value, hashed keys 64
    lowercase hex."""
    body = assert_upload(api.users(audience, [[cell]], schema=(key,)), audience, received=1, invalid=0 if valid else 1)
    assert (body["invalid_entry_samples"] == {}) is valid
    assert api.sandbox.member_keys(audience) == ({member_key(**{key: cell})} if valid else set())


def test_one_bad_cell_among_many_good_ones_is_found(api: Api, audience: str, sandbox: GraphSandbox):
    """Columns of digests are checked as a whole: a single bad cell in a long column still counts as
    invalid, and its row is stored under its other valid cells."""
    emails_ = [sha(f"u{i}@example.com") for i in range(500)]
    for bad in (emails_[1] + "|" + emails_[2], emails_[3].upper(), 7, ["nested"]):
        rows = [[e, ""] for e in emails_[:250]] + [[bad, ""]] + [[e, sha("1555")] for e in emails_[250:]]
        sandbox_before = len(sandbox.member_keys(audience))
        assert_upload(api.users(audience, rows, schema=("EMAIL", "PHONE")), audience, received=len(rows), invalid=1)
        assert len(sandbox.member_keys(audience)) - sandbox_before in (0, 500)
    assert sandbox.member_keys(audience) == {member_key(EMAIL=e) for e in emails_[:250]} | {
        member_key(EMAIL=e, PHONE=sha("1555")) for e in emails_[250:]
    }


def test_undecodable_text_in_a_digest_column_is_an_invalid_entry(api: Api, audience: str):
    """A lone surrogate (valid JSON, not encodable text) where a digest belongs is one invalid entry, not a
    failed request."""
    body = '{"payload": {"schema": ["EMAIL"], "data": [["\\ud800"], ["' + sha("ok@example.com") + '"]]}}'
    response = api.call(
        "POST", f"{audience}/users", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert_upload(response, audience, received=2, invalid=1)


def test_samples_are_the_first_hundred_distinct_invalid_entries(api: Api, audience: str):
    rows = [["", ""]] * 150 + [["not-a-digest", ""]]
    body = assert_upload(api.users(audience, rows, schema=("EMAIL", "PHONE")), audience, received=151, invalid=151)
    assert body["invalid_entry_samples"] == {",": "every field is empty", "not-a-digest,": "invalid value for EMAIL"}


def test_row_identity_sorts_the_pairs_themselves():
    """The identity sorts `KEY=cell` strings, so a key that extends another (ZIP, ZIP5) sorts as its pair does."""
    from audience_assets.standins.graph_sandbox.validation import row_keys

    keys, rejected = row_keys(["ZIP", "ZIP5", "EMAIL", "EMAIL_MD5"], [[sha("z"), "z5", sha("e"), "m"]])
    assert keys == [sha("|".join(sorted([f"ZIP={sha('z')}", "ZIP5=z5", f"EMAIL={sha('e')}", "EMAIL_MD5=m"])))]
    assert rejected == []


def test_lookalike_value_alone_is_not_an_identity(api: Api):
    """A row whose only value is LOOKALIKE_VALUE identifies nobody: it is an invalid entry."""
    value_based = api.create("vb", is_value_based=True)
    rows = [["", 5.0], [sha("a@example.com"), 3.5]]
    assert_upload(api.users(value_based, rows, schema=("EMAIL", "LOOKALIKE_VALUE")), value_based, received=2, invalid=1)


def test_invalid_entry_samples_are_capped_at_100(api: Api, audience: str):
    """invalid_entry_samples holds at most 100 entries; num_invalid_entries counts them all."""
    body = assert_upload(
        api.users(audience, [[f"bad{i}"] for i in range(150)] + emails("ok")), audience, received=151, invalid=150
    )
    assert len(body["invalid_entry_samples"]) == 100


def test_members_are_a_set(api: Api, audience: str, sandbox: GraphSandbox):
    """Re-adding the same users is harmless; removing users that are not there is too."""
    api.users(audience, emails("a", "b"))
    api.users(audience, emails("a", "b", "b"))
    assert sandbox.member_keys(audience) == email_keys("a", "b")
    api.users(audience, emails("z"), method="DELETE")
    assert sandbox.member_keys(audience) == email_keys("a", "b")


def test_approximate_counts_follow_the_member_set(api: Api, audience: str):
    """Counts are −1 while the audience is tiny and bracket the size once it is large enough."""
    fields = {"fields": "approximate_count_lower_bound,approximate_count_upper_bound,sandbox_member_count"}
    api.users(audience, [[sha(f"u{i}")] for i in range(999)])
    assert api.get(audience, params=fields).json()["approximate_count_lower_bound"] == -1
    api.users(audience, [[sha("one more")]])
    counts = api.get(audience, params=fields).json()
    assert counts["sandbox_member_count"] == 1000
    assert counts["approximate_count_lower_bound"] <= 1000 <= counts["approximate_count_upper_bound"]


# ##### ADD / REMOVE SESSIONS


@pytest.mark.parametrize(
    "session",
    [
        {"batch_seq": 1},  # no session_id
        {"session_id": 0},
        {"session_id": -5},
        {"session_id": "12"},
        {"session_id": True},
        {"session_id": 1.5},
        {"session_id": 2**63},
        {"session_id": 1, "batch_seq": 0},
        {"session_id": 1, "batch_seq": "1"},
        {"session_id": 1, "batch_seq": True},
        {"session_id": 1, "last_batch_flag": "true"},
        {"session_id": 1, "last_batch_flag": 1},
        {"session_id": 1, "estimated_num_total": -1},
        {"session_id": 1, "estimated_num_total": "10"},
        "{not json",
        [1, 2],
    ],
    ids=repr,
)
def test_malformed_session_objects_are_100(api: Api, audience: str, session: Any):
    """session needs a positive int64 session_id, positive int batch_seq, bool last_batch_flag, int
    estimated_num_total >= 0."""
    assert_error(api.users(audience, emails("a"), session=session), 400, 100, message="session")
    assert api.sandbox.member_keys(audience) == set()


def test_session_counters_are_cumulative_and_the_last_batch_closes_it(api: Api, audience: str):
    """num_received is cumulative per (audience, session_id); after last_batch_flag=true no batch is accepted;
    /sessions reports numeric strings."""
    session = {"session_id": 555, "estimated_num_total": 5}
    assert_upload(
        api.users(audience, emails("a", "b"), session={**session, "batch_seq": 1, "last_batch_flag": False}),
        audience,
        received=2,
        session_id=555,
    )
    assert_upload(
        api.users(audience, emails("c") + [[""]], session={**session, "batch_seq": 2, "last_batch_flag": False}),
        audience,
        received=4,
        invalid=1,
        session_id=555,
    )
    [state] = api.get(f"{audience}/sessions").json()["data"]
    assert state["session_id"] == "555" and state["stage"] == "uploading"
    assert (state["num_received"], state["num_invalid_entries"], state["num_matched"]) == ("4", "1", "3")
    assert_upload(
        api.users(audience, emails("d"), session={**session, "batch_seq": 3, "last_batch_flag": True}),
        audience,
        received=5,
        invalid=1,
    )
    assert_error(
        api.users(audience, emails("e"), session={**session, "batch_seq": 4, "last_batch_flag": True}),
        400,
        100,
        message="has already finished",
    )
    [state] = api.get(f"{audience}/sessions", params={"session_id": "555"}).json()["data"]
    assert state["stage"] == "finished" and state["num_received"] == "5" and state["progress"] == "100"
    assert api.sandbox.member_keys(audience) == email_keys("a", "b", "c", "d")


def test_without_a_session_the_server_assigns_one_and_closes_it(api: Api, audience: str):
    """Without a session object the server generates a session_id, and that one-batch session is closed."""
    body = assert_upload(api.users(audience, emails("a")), audience, received=1)
    again = api.users(audience, emails("b"), session={"session_id": int(body["session_id"]), "batch_seq": 2})
    assert_error(again, 400, 100, message="has already finished")


def test_a_session_belongs_to_one_operation(api: Api, audience: str):
    """One session per logical upload and operation: an add session cannot carry removals or a replace."""
    api.users(audience, emails("a"), session={"session_id": 9, "batch_seq": 1})
    assert_error(
        api.users(audience, emails("a"), session={"session_id": 9, "batch_seq": 2}, method="DELETE"),
        400,
        100,
        message="belongs to another operation",
    )
    assert_error(api.replace(audience, emails("x"), 9, 1), 400, 100, message="belongs to another operation")
    assert_error(api.replace(audience, emails("x"), 9, 2), 400, 100, message="belongs to another operation")
    assert api.status(audience) == {"code": 200, "description": "Normal"}
    assert api.sandbox.member_keys(audience) == email_keys("a")


def test_sessions_are_per_audience(api: Api):
    """The same session_id on another audience is another session."""
    first, second = api.create("first"), api.create("second")
    api.users(first, emails("a"), session={"session_id": 4, "last_batch_flag": True})
    assert_upload(
        api.users(second, emails("a"), session={"session_id": 4, "last_batch_flag": True}), second, received=1
    )


# ##### AUDIENCES THAT CANNOT TAKE USERS


def test_flagged_audience_blocks_edits_with_100_1713230(api: Api, audience: str, sandbox: GraphSandbox):
    """operation_status 471 (flagged for integrity) blocks add, remove and replace with 100/1713230."""
    api.users(audience, emails("a"))
    sandbox.flag(audience)
    assert api.status(audience) == {"code": 471, "description": "Flagged"}
    for response in (
        api.users(audience, emails("b")),
        api.users(audience, emails("a"), method="DELETE"),
        api.replace(audience, emails("c"), 1, 1),
    ):
        assert_error(response, 400, 100, 1713230)
    assert sandbox.member_keys(audience) == email_keys("a")
    sandbox.flag(audience, False)
    assert_upload(api.users(audience, emails("b")), audience, received=1)


def test_terms_not_accepted_blocks_uploads_with_200_1870090(api: Api, audience: str, sandbox: GraphSandbox):
    """Terms revoked on the account: uploads fail with 200/1870090 (HTTP 403) and store nothing."""
    sandbox.config.ad_accounts[ACCOUNT]["tos_accepted"] = False
    assert_error(api.users(audience, emails("a")), 403, 200, 1870090, message="Terms Not Accepted")
    assert_error(api.replace(audience, emails("a"), 1, 1), 403, 200, 1870090)
    assert sandbox.member_keys(audience) == set()


def test_only_custom_audiences_accept_users(api: Api):
    """Only CUSTOM (customer-file) audiences take /users and /usersreplace: 2650 otherwise."""
    website = api.post(f"{ACCOUNT}/customaudiences", {"name": "site", "subtype": "WEBSITE"}).json()["id"]
    assert_error(api.users(website, emails("a")), 400, 2650, message="only customer file (CUSTOM)")
    assert_error(api.replace(website, emails("a"), 1, 1), 400, 2650, message="only customer file (CUSTOM)")


# ##### REPLACE


def test_replace_requires_a_session_with_batch_seq(api: Api, audience: str):
    """usersreplace requires a session, and a batch_seq within it."""
    assert_error(
        api.post(f"{audience}/usersreplace", {"payload": {"schema": ["EMAIL"], "data": emails("a")}}),
        400,
        100,
        message="Missing required parameter: session",
    )
    assert_error(api.replace(audience, emails("a"), 1, None), 400, 100, message="batch_seq")


def test_replace_swaps_the_member_set_on_the_last_batch(api: Api, audience: str, sandbox: GraphSandbox):
    """Batch 1 starts the replace (replace_in_progress); members change only when the last batch arrives,
    to exactly the rows of the session; then the audience is Normal again."""
    api.users(audience, emails("old1", "old2"))
    assert_upload(api.replace(audience, emails("n1", "n2"), 31, 1), audience, received=2, session_id=31)
    assert api.status(audience) == {"code": 300, "description": "replace_in_progress"}
    assert sandbox.member_keys(audience) == email_keys("old1", "old2")
    assert_upload(api.replace(audience, emails("n3") + [["junk"]], 31, 2), audience, received=4, invalid=1)
    assert_upload(api.replace(audience, emails("n4"), 31, 3, last=True), audience, received=5, invalid=1)
    assert sandbox.member_keys(audience) == email_keys("n1", "n2", "n3", "n4")
    assert api.status(audience) == {"code": 200, "description": "Normal"}
    assert sandbox.resent_replace_batches() == 0


def test_replace_first_batch_must_come_first_1870147(api: Api, audience: str):
    """A replace session must start with batch_seq 1: otherwise 2650/1870147 and nothing starts."""
    response = api.replace(audience, emails("a"), 41, 2)
    assert_error(response, 400, 2650, 1870147, message="the first batch (batch_seq 1)")
    assert api.status(audience)["code"] == 200
    assert api.get(f"{audience}/sessions").json() == {"data": []}


def test_replace_after_the_last_batch_is_1870159(api: Api, audience: str, sandbox: GraphSandbox):
    """After last_batch_flag the replace session is finished: 2650/1870159."""
    api.replace(audience, emails("a"), 51, 1, last=True)
    for seq in (2, 1):  # neither a later batch nor a new batch 1 reopens a finished session
        assert_error(api.replace(audience, emails("b"), 51, seq), 400, 2650, 1870159, message="already finished")
    assert sandbox.member_keys(audience) == email_keys("a")


def test_one_replace_at_a_time_and_no_users_calls_during_it_1870145(api: Api, audience: str, sandbox: GraphSandbox):
    """One replace at a time, and no /users add or remove while it runs: 2650/1870145 (retry later)."""
    api.users(audience, emails("old"))
    api.replace(audience, emails("a"), 61, 1)
    assert_error(
        api.replace(audience, emails("b"), 62, 1), 400, 2650, 1870145, message="another replace is in progress"
    )
    assert_error(api.users(audience, emails("c")), 400, 2650, 1870145, message="in progress")
    assert_error(api.users(audience, emails("old"), method="DELETE"), 400, 2650, 1870145)
    assert_error(api.replace(audience, emails("b"), 62, 2), 400, 2650, 1870147)  # session 62 never started
    api.replace(audience, emails("d"), 61, 2, last=True)
    assert sandbox.member_keys(audience) == email_keys("a", "d")
    assert_upload(api.users(audience, emails("c")), audience, received=1)  # free again
    assert_upload(api.replace(audience, emails("e"), 62, 1, last=True), audience, received=1)


def test_replace_window_is_90_minutes_1870158(api: Api, audience: str, sandbox: GraphSandbox, clock: Clock):
    """A replace session ends 90 minutes after batch 1; later batches get 1870158 and the audience is what
    the session had received when the window closed."""
    api.users(audience, emails("old"))
    api.replace(audience, emails("a"), 71, 1)
    clock.advance(90 * 60)
    assert_upload(api.replace(audience, emails("b"), 71, 2), audience, received=2)  # exactly 90 min: still open
    clock.advance(1)
    assert_error(
        api.replace(audience, emails("c"), 71, 3, last=True), 400, 2650, 1870158, message="timed out (90 minutes)"
    )
    assert sandbox.member_keys(audience) == email_keys("a", "b")
    assert_error(api.replace(audience, emails("c"), 71, 4), 400, 2650, 1870158)
    assert api.status(audience) == {"code": 200, "description": "Normal"}
    [state] = api.get(f"{audience}/sessions", params={"session_id": "71"}).json()["data"]
    assert state["stage"] == "finished" and state["num_received"] == "2"
    assert_upload(api.users(audience, emails("c")), audience, received=1)  # the documented way to finish
    assert sandbox.member_keys(audience) == email_keys("a", "b", "c")


def test_replace_window_closes_on_any_access(api: Api, audience: str, sandbox: GraphSandbox, clock: Clock):
    """A timed-out replace no longer blocks the audience: a new replace may start."""
    api.replace(audience, emails("a"), 81, 1)
    clock.advance(90 * 60 + 1)
    assert_upload(api.replace(audience, emails("b"), 82, 1, last=True), audience, received=1)
    assert sandbox.member_keys(audience) == email_keys("b")


def test_replace_of_an_audience_of_100m_or_more_is_1870144(api: Api, audience: str, monkeypatch: pytest.MonkeyPatch):
    """Audiences of 100 M users or more cannot be replaced: 2650/1870144."""
    monkeypatch.setattr(sandbox_module, "REPLACE_MAX_USERS", 2)  # 100 M scaled down
    api.users(audience, emails("a", "b"))
    assert_error(api.replace(audience, emails("c"), 91, 1), 400, 2650, 1870144, message="100 million")
    assert api.status(audience)["code"] == 200


def test_resending_batch_1_restarts_the_replace(api: Api, audience: str, sandbox: GraphSandbox):
    """`batch_seq=1` always starts a replace over: what the session had sent is dropped."""
    api.replace(audience, emails("a", "b"), 101, 1)
    api.replace(audience, emails("c"), 101, 2)
    assert_upload(api.replace(audience, emails("d"), 101, 1), audience, received=1)
    assert sandbox.counter("replace_restarts") == 1
    api.replace(audience, emails("e"), 101, 2, last=True)
    assert sandbox.member_keys(audience) == email_keys("d", "e")
    assert sandbox.resent_replace_batches() == 3  # batch 1 twice, batch 2 twice, plus the restart


def test_later_replace_batches_may_repeat(api: Api, audience: str, sandbox: GraphSandbox):
    """Batches after 1 may be repeated (adds are idempotent); the sandbox counts the repeat."""
    api.replace(audience, emails("a"), 111, 1)
    api.replace(audience, emails("b"), 111, 2)
    assert_upload(api.replace(audience, emails("b"), 111, 2), audience, received=3)
    api.replace(audience, emails("c"), 111, 3, last=True)
    assert sandbox.member_keys(audience) == email_keys("a", "b", "c")
    assert sandbox.resent_replace_batches() == 1


def test_replace_validates_the_payload_like_users(api: Api, audience: str):
    """usersreplace applies the payload rules of /users; a rejected batch 1 starts no replace."""
    response = api.post(
        f"{audience}/usersreplace",
        {"payload": {"schema": ["EMAIL", "PHONE"], "data": [["a"]]}, "session": {"session_id": 1, "batch_seq": 1}},
    )
    assert_error(response, 400, 100, message="Data is missing or does not match schema")
    assert api.status(audience)["code"] == 200  # the rejected batch 1 started nothing


# ##### RATE LIMITING AND USAGE HEADERS


def test_usage_header_on_every_account_response(api: Api, audience: str):
    """X-Business-Use-Case-Usage: {"<account digits>": [{"type": "custom_audience", call_count, total_cputime,
    total_time, estimated_time_to_regain_access, ads_api_access_tier}]}, plus X-App-Usage; errors too."""
    for response in (api.get(ACCOUNT), api.users(audience, emails("a")), api.get(audience, params={"fields": "bogus"})):
        entry = usage(response)
        assert set(entry) == {
            "type",
            "call_count",
            "total_cputime",
            "total_time",
            "estimated_time_to_regain_access",
            "ads_api_access_tier",
        }
        assert entry["type"] == "custom_audience" and entry["estimated_time_to_regain_access"] == 0
        assert entry["call_count"] == 0  # no budget configured: unlimited
        assert set(json.loads(response.headers["x-app-usage"])) == {"call_count", "total_cputime", "total_time"}


def test_call_count_rises_to_100_then_80003_with_time_to_regain(clock: Clock):
    """call_count is the share of the per-account budget used in the rolling window; past 100 % the answer is 80003
    with estimated_time_to_regain_access (minutes) > 0."""
    sandbox = GraphSandbox(config=config(rate_limit_calls=4, rate_limit_window_seconds=600), clock=clock)
    api = Api(sandbox)
    shares = []
    for _ in range(4):
        response = api.get(ACCOUNT)
        assert response.status_code == 200
        shares.append(usage(response)["call_count"])
        clock.advance(30)
    assert shares == [25, 50, 75, 100]
    throttled = api.get(f"{ACCOUNT}/customaudiences")
    assert_error(
        throttled, 400, 80003, message="There have been too many calls to this ad-account. Wait a bit and try again."
    )
    entry = usage(throttled)
    # the oldest call leaves the 600 s window 480 s from now: 8 whole minutes
    assert entry["estimated_time_to_regain_access"] == math.ceil((600 - 4 * 30) / 60) == 8
    assert entry["call_count"] == 100
    assert sandbox.counter("throttled") == 1
    assert api.get(f"{OTHER_ACCOUNT}/customaudiences").status_code == 200  # budgets are per ad account
    clock.advance(600 - 4 * 30)
    response = api.get(ACCOUNT)
    assert response.status_code == 200 and usage(response)["estimated_time_to_regain_access"] == 0


def test_rejected_calls_count_against_the_budget(clock: Clock):
    """Meta counts every call to the account, including the ones it rejects."""
    api = Api(GraphSandbox(config=config(rate_limit_calls=2), clock=clock))
    assert_error(api.get(ACCOUNT, params={"fields": "bogus"}), 400, 100, error_type="GraphMethodException")
    api.get(ACCOUNT)
    assert_error(api.get(ACCOUNT), 400, 80003)


# ##### FAULT INJECTION


def test_timeout_before_drops_the_request_unprocessed(clock: Clock):
    """Fault timeout_before: no answer and nothing applied."""
    api = Api(GraphSandbox(config=config(faults=Faults(timeout_before=1.0)), clock=clock))
    with pytest.raises(httpx.ReadTimeout):
        api.post(f"{ACCOUNT}/customaudiences", {"name": "lost", **CREATE})
    assert api.sandbox.audience_id("lost") is None


def test_timeout_after_applies_the_request_then_drops_the_answer(clock: Clock):
    """Fault timeout_after: applied, but the answer is lost (the case clients must reconcile)."""
    api = Api(GraphSandbox(config=config(faults=Faults(timeout_after=1.0)), clock=clock))
    with pytest.raises(httpx.ReadTimeout):
        api.post(f"{ACCOUNT}/customaudiences", {"name": "applied", **CREATE})
    assert api.sandbox.audience_id("applied") is not None


def test_server_errors_are_transient_500s_or_html_edge_pages(clock: Clock):
    """Fault server_error: a 500 Graph error (code 2, is_transient) or an HTML 502 edge page; nothing applied."""
    api = Api(GraphSandbox(config=config(faults=Faults(server_error=1.0, seed=3)), clock=clock))
    kinds = set()
    for i in range(30):
        response = api.post(f"{ACCOUNT}/customaudiences", {"name": f"s{i}", **CREATE})
        if response.status_code == 502:
            assert response.headers["content-type"] == "text/html" and b"502 Bad Gateway" in response.content
            kinds.add("html")
        else:
            error = assert_error(response, 500, 2, message="Please retry your request later")
            assert error["is_transient"] is True
            kinds.add("json")
    assert kinds == {"html", "json"}
    assert api.get(f"{ACCOUNT}/customaudiences").status_code in (500, 502)
    assert api.sandbox.audience_id("s0") is None


@pytest.mark.parametrize(("kind", "regain"), [("estimate", 1), ("regain0", 0), ("none", None)])
def test_throttle_fault_is_80003_without_spending_the_budget(clock: Clock, kind: str, regain: int | None):
    """Fault throttle: an 80003 although budget remains, nothing applied and nothing counted. Its usage header
    reads 100 % with an estimate of a minute, 100 % with an estimate of 0 (Meta promises no more), or is absent."""
    sandbox = GraphSandbox(
        config=config(rate_limit_calls=10, faults=Faults(throttle=1.0, throttle_headers=(kind,))), clock=clock
    )
    api = Api(sandbox)
    response = api.post(f"{ACCOUNT}/customaudiences", {"name": "t", **CREATE})
    assert_error(response, 400, 80003)
    if regain is None:
        assert "x-business-use-case-usage" not in response.headers and "x-app-usage" not in response.headers
    else:
        assert usage(response)["estimated_time_to_regain_access"] == regain and usage(response)["call_count"] == 100
    assert sandbox.audience_id("t") is None
    assert sandbox.counter("throttled") == 1
    sandbox.config.faults.throttle = 0.0
    assert usage(api.get(ACCOUNT))["call_count"] == 10  # the refused call spent nothing: this is the first of 10


def test_reset_fault_closes_the_connection_unprocessed(clock: Clock):
    """Fault reset: the connection is reset with no answer, in process and over real HTTP; nothing applied."""
    api = Api(GraphSandbox(config=config(faults=Faults(reset=1.0)), clock=clock))
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(f"{ACCOUNT}/customaudiences", {"name": "reset", **CREATE})
    with api.sandbox.serve() as server, httpx.Client(base_url=server.url, timeout=5) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            http.post(
                f"/v25.0/{ACCOUNT}/customaudiences",
                json={"name": "reset", **CREATE},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
    assert api.sandbox.audience_id("reset") is None


def test_slow_fault_answers_late_and_correctly(clock: Clock):
    """Fault slow: the answer comes `slow_seconds` late (wall time), and is the normal answer."""
    api = Api(GraphSandbox(config=config(faults=Faults(slow=1.0, slow_seconds=0.2)), clock=clock))
    started = time.monotonic()
    response = api.post(f"{ACCOUNT}/customaudiences", {"name": "slow", **CREATE})
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200 and api.sandbox.audience_id("slow") == response.json()["id"]


def test_open_sessions_fault_keeps_finished_sessions_uploading(api: Api, audience: str):
    """Fault open_sessions: a session whose last batch arrived still reads "uploading" with end_time 0, as
    users report of Meta (facebook-java-business-sdk #492); its rows are applied all the same."""
    api.users(audience, emails("a"), session={"session_id": 77, "batch_seq": 1, "last_batch_flag": True})
    api.sandbox.config.faults.open_sessions = True
    [session] = api.get(f"{audience}/sessions", params={"session_id": "77"}).json()["data"]
    assert (session["stage"], session["end_time"], session["num_received"]) == ("uploading", "0", "1")
    assert api.sandbox.member_keys(audience) == email_keys("a")


def test_a_fault_profile_reads_like_the_environment_variable():
    """META_SANDBOX_FAULTS: rates, header kinds and flags; a bad token names the variable and the grammar."""
    faults = Faults.parse(
        "throttle:0.15,5xx:0.05,regain0,noheader,reset:0.02,slow:0.05,slow_seconds:0.5,"
        "timeout_after:0.01,open_sessions,seed:9"
    )
    assert (faults.throttle, faults.server_error, faults.reset, faults.slow, faults.slow_seconds) == (
        0.15,
        0.05,
        0.02,
        0.05,
        0.5,
    )
    assert faults.throttle_headers == ("regain0", "none") and faults.open_sessions and faults.timeout_after == 0.01
    assert faults.seed == 9 and Faults.parse("") == Faults()
    for bad in ("throttle:2", "throttle", "bogus", "5xx:0.6,throttle:0.6"):
        with pytest.raises(ValueError, match="META_SANDBOX_FAULTS"):
            Faults.parse(bad)


def test_faults_are_reproducible_from_the_seed(clock: Clock):
    """Faults are drawn from a seeded generator: same seed, same sequence."""

    def outcomes(seed: int) -> list[str]:
        api = Api(
            GraphSandbox(
                config=config(faults=Faults(server_error=0.2, timeout_before=0.2, throttle=0.2, seed=seed)), clock=clock
            )
        )
        seen = []
        for _ in range(40):
            try:
                seen.append(str(api.get(ACCOUNT).status_code))
            except httpx.ReadTimeout:
                seen.append("timeout")
        return seen

    first = outcomes(11)
    assert first == outcomes(11)
    assert {"200", "400", "timeout"} <= set(first)
    assert first != outcomes(12)


def test_admin_endpoints_are_never_faulted(clock: Clock):
    """The /_sandbox/ admin API bypasses fault injection."""
    sandbox = GraphSandbox(config=config(faults=Faults(server_error=1.0)), clock=clock)
    assert Api(sandbox).call("GET", "_sandbox/stats", version=None, token=None).status_code == 200


def test_dropped_connection_over_http_after_delay(clock: Clock):
    """Over real HTTP a dropped response stalls `delay_seconds`, then closes the connection unanswered."""
    sandbox = GraphSandbox(config=config(faults=Faults(timeout_before=1.0, delay_seconds=0.3)), clock=clock)
    with sandbox.serve() as server, httpx.Client(base_url=server.url, timeout=5) as http:
        started = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(f"/v25.0/{ACCOUNT}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert time.monotonic() - started >= 0.3


# ##### ADMIN API (/_sandbox/, not part of Meta's API)


def test_admin_api_reports_audiences_members_and_stats(api: Api, audience: str, sandbox: GraphSandbox):
    """/_sandbox/audiences, /members and /stats expose state for tests and demos; unknown paths are 404."""
    api.users(audience, emails("a", "b"))
    api.replace(audience, emails("a"), 5, 1)
    api.replace(audience, emails("a"), 5, 1)
    admin = lambda path, **params: api.call("GET", f"_sandbox/{path}", version=None, token=None, params=params)  # noqa: E731
    assert admin("audiences").json() == {
        "data": [{"id": audience, "name": "contract audience", "account": ACCOUNT, "members": 2}]
    }
    assert admin("members", audience_id=audience).json() == {"data": sorted(email_keys("a", "b"))}
    stats = admin("stats").json()
    assert stats["replace_restarts"] == 1 and stats["resent_replace_batches"] == sandbox.resent_replace_batches() == 2
    assert admin("nothing").status_code == 404


# ##### LIMITED DATA USE


@pytest.mark.parametrize(
    ("cells", "problem"),
    [
        ([["LDU"], 1, 1000], None),
        ([[], 0, 0], None),
        ([["LDU"], 0, 0], None),
        (["LDU", 1, 1000], "must be an array"),
        ([["LDU", "OTHER"], 1, 1000], "must be an array"),
        ([["LDU"], "1", "1000"], "must be integers"),
        ([["LDU"], 1, 999], "Invalid data processing location: country 1, state 999"),
        ([["LDU"], 2, 0], "Invalid data processing location"),
    ],
)
def test_limited_data_use_fields_are_validated_per_row(api: Api, cells: list, problem: str | None):
    """The three LDU fields as Meta documents them: an options array ([] or ["LDU"]), country and state
    integers (0/0 geolocate, 1 with 1000-1013); they are not identifiers (the row's identity is its email)."""
    audience_id = api.create()
    schema = ("EMAIL", "DATA_PROCESSING_OPTIONS", "DATA_PROCESSING_OPTIONS_COUNTRY", "DATA_PROCESSING_OPTIONS_STATE")
    response = api.users(audience_id, [[sha("ldu@example.com"), *cells]], schema=schema)
    if problem is None:
        assert_upload(response, audience_id, received=1)
    else:
        assert_error(response, 400, 100, message=problem)
