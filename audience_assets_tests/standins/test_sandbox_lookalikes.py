"""Contract tests for the sandbox's lookalike audiences and the values of value-based audiences.

Lookalikes as Meta's "Lookalike Audiences" guide documents them: `subtype=LOOKALIKE`, an origin of the same ad
account (100 members or more), a `lookalike_spec` (a country; the top `ratio`, 0.01-0.20 in steps of 0.01, or the
band from `starting_ratio`), one lookalike per seed, country and size (2654/1713007), the spec read in Meta's shape.
Values: a LOOKALIKE_VALUE cell is a non-negative JSON number, else its row is an invalid entry; each member's latest
value is held and goes with the member. Driven in process with the raw-call helpers of `test_graph_sandbox`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from audience_assets.standins.graph_sandbox import GraphSandbox
from audience_assets_tests.standins.test_graph_sandbox import (
    ACCOUNT,
    OTHER_ACCOUNT,
    Api,
    Clock,
    assert_error,
    assert_upload,
    config,
    email_keys,
    emails,
    member_key,
    sha,
)

DUPLICATE = (
    "(#2654) Can\u2019t Create a Duplicate Lookalike: You've already created a lookalike audience with the same "
    "source, country and size. Please try using a different source or different specifications."
)
RATIO_ERROR = "(#100) Param lookalike_spec[ratio] must be between 0.01 and 0.20 in steps of 0.01"
VALUE_SCHEMA = ("EMAIL", "LOOKALIKE_VALUE")


@pytest.fixture
def sandbox() -> GraphSandbox:
    sb = GraphSandbox(config=config(), clock=Clock())
    yield sb
    sb.close()


@pytest.fixture
def api(sandbox: GraphSandbox) -> Api:
    return Api(sandbox)


def seed(api: Api, members: int = 100, account: str = ACCOUNT, name: str = "seed") -> str:
    """A customer-list audience with `members` people: an origin for lookalikes."""
    audience_id = api.create(name, account=account)
    assert_upload(api.users(audience_id, [[sha(f"{name}{i}")] for i in range(members)]), audience_id, received=members)
    return audience_id


def lookalike(api: Api, origin: Any, spec: Any, account: str = ACCOUNT, **extra: Any) -> httpx.Response:
    body = {"name": "lookalike", "subtype": "LOOKALIKE", "origin_audience_id": origin, "lookalike_spec": spec}
    return api.post(f"{account}/customaudiences", {**body, **extra})


def created(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["id"] and body["id"].isdigit()
    return body["id"]


@pytest.fixture
def origin(api: Api) -> str:
    return seed(api)


# ##### REFUSALS


def test_origin_audience_id_and_lookalike_spec_are_required(api: Api, origin: str):
    body = {"name": "lal", "subtype": "LOOKALIKE", "lookalike_spec": {"country": "US", "ratio": 0.01}}
    missing_origin = api.post(f"{ACCOUNT}/customaudiences", body)
    assert_error(missing_origin, 400, 100, message="(#100) The parameter origin_audience_id is required")
    missing_spec = api.post(
        f"{ACCOUNT}/customaudiences", {**body, "lookalike_spec": None, "origin_audience_id": origin}
    )
    assert_error(missing_spec, 400, 100, message="(#100) The parameter lookalike_spec is required")
    for not_an_object in ('["US"]', "{not json", ["US", 0.01]):
        assert_error(lookalike(api, origin, not_an_object), 400, 100, message="lookalike_spec must be a JSON object")
    assert api.sandbox.lookalikes(origin) == []


def test_the_origin_must_be_a_live_audience_of_the_same_account(api: Api, origin: str):
    """An unknown, deleted or other account's origin is the unknown-object error (100/33)."""
    elsewhere = seed(api, account=OTHER_ACCOUNT, name="elsewhere")
    deleted = seed(api, name="gone")
    assert api.delete(deleted).json() == {"success": True}
    for missing in ("999", deleted, elsewhere):
        error = assert_error(
            lookalike(api, missing, {"country": "US", "ratio": 0.01}), 400, 100, 33, error_type="GraphMethodException"
        )
        assert f"Object with ID '{missing}' does not exist" in error["message"]


def test_a_spec_without_a_location_is_2654_1713159(api: Api, origin: str):
    error = assert_error(lookalike(api, origin, {"ratio": 0.01}), 400, 2654, 1713159)
    assert error["message"] == (
        "(#2654) Missing Locations in Lookalike Spec: The lookalike spec must contain one of location_spec or "
        "country field to create a lookalike."
    )
    location = {"location_spec": {"geo_locations": {"countries": ["US"]}}, "ratio": 0.01}
    assert_error(lookalike(api, origin, location), 400, 100, message="not supported by the sandbox")


@pytest.mark.parametrize("country", ["XX", "us", "USA", "U", 840, ["US"]])
def test_a_country_that_is_no_iso_alpha2_code_is_2654_1713089(api: Api, origin: str, country: Any):
    error = assert_error(lookalike(api, origin, {"country": country, "ratio": 0.01}), 400, 2654, 1713089)
    assert error["message"] == (
        f"(#2654) Invalid Lookalike Country: {country} cannot be recognized as a valid country for creating "
        "lookalikes, please verify the format."
    )


@pytest.mark.parametrize("ratio", [0, 0.0, 0.21, 0.3, 1, -0.01, 0.015, 0.055, "abc", "NaN", True, [0.01]])
def test_a_ratio_outside_the_steps_is_100(api: Api, origin: str, ratio: Any):
    assert_error(lookalike(api, origin, {"country": "US", "ratio": ratio}), 400, 100, message=RATIO_ERROR)
    assert api.sandbox.lookalikes(origin) == []


def test_a_size_type_needs_a_known_name_and_custom_ratio_a_ratio(api: Api, origin: str):
    assert_error(lookalike(api, origin, {"country": "US", "type": "huge"}), 400, 100, message="lookalike_spec[type]")
    assert_error(lookalike(api, origin, {"country": "US", "type": "custom_ratio"}), 400, 100, message="[ratio]")
    assert_error(lookalike(api, origin, {"country": "US"}), 400, 100, message="lookalike_spec[ratio] is required")


@pytest.mark.parametrize(
    "start, ratio, message",
    [
        (0.05, 0.05, "(#100) Param lookalike_spec[starting_ratio] must be less than lookalike_spec[ratio]"),
        (0.06, 0.05, "(#100) Param lookalike_spec[starting_ratio] must be less than lookalike_spec[ratio]"),
        (0.20, 0.20, "must be less than lookalike_spec[ratio]"),
        (-0.01, 0.05, "lookalike_spec[starting_ratio] must be between 0.00 and 0.19"),
        (0.005, 0.05, "lookalike_spec[starting_ratio] must be between 0.00 and 0.19"),
    ],
)
def test_starting_ratio_is_a_step_below_the_ratio(api: Api, origin: str, start: float, ratio: float, message: str):
    spec = {"country": "US", "starting_ratio": start, "ratio": ratio}
    assert_error(lookalike(api, origin, spec), 400, 100, message=message)


def test_a_seed_under_100_members_is_too_small(api: Api):
    small = seed(api, members=99)
    error = assert_error(lookalike(api, small, {"country": "US", "ratio": 0.01}), 400, 2654)
    assert error["message"] == (
        "(#2654) Source Audience Is Too Small: The source audience must contain at least 100 people to create a "
        "lookalike."
    )
    api.users(small, [[sha("the hundredth")]])
    created(lookalike(api, small, {"country": "US", "ratio": 0.01}))


def test_a_second_lookalike_of_one_seed_country_and_size_is_2654_1713007(api: Api, origin: str):
    """Meta's text verbatim (its apostrophe a U+2019); the size compares as hundredths, however it is sent (a
    form field, a ratio as text, a type); a deleted lookalike no longer blocks."""
    first = created(lookalike(api, origin, {"country": "DE", "ratio": 0.01}))
    error = assert_error(lookalike(api, origin, {"country": "DE", "ratio": 0.01}), 400, 2654, 1713007)
    assert error["message"] == DUPLICATE and "\u2019" in error["message"]
    form = {
        "name": "form",
        "subtype": "LOOKALIKE",
        "origin_audience_id": origin,
        "lookalike_spec": json.dumps({"type": "custom_ratio", "ratio": "0.01", "country": "DE"}),
    }
    assert_error(api.call("POST", f"{ACCOUNT}/customaudiences", data=form), 400, 2654, 1713007, message=DUPLICATE)
    assert_error(lookalike(api, origin, {"country": "DE", "type": "similarity"}), 400, 2654, 1713007)
    assert_error(lookalike(api, origin, {"country": "DE", "starting_ratio": 0, "ratio": 0.01}), 400, 2654, 1713007)
    assert [held["id"] for held in api.sandbox.lookalikes(origin)] == [first]
    api.delete(first)
    created(lookalike(api, origin, {"country": "DE", "ratio": 0.01}))


def test_the_same_size_on_another_origin_country_or_band_is_no_duplicate(api: Api, origin: str):
    other = seed(api, name="other")
    spec = {"country": "US", "ratio": 0.05}
    ids = [
        created(lookalike(api, origin, spec)),
        created(lookalike(api, other, spec)),
        created(lookalike(api, origin, {**spec, "country": "GB"})),
        created(lookalike(api, origin, {**spec, "starting_ratio": 0.01})),
    ]
    assert len(set(ids)) == 4
    assert api.sandbox.lookalikes(origin) == [
        {"id": ids[0], "country": "US", "starting_ratio": 0.0, "ratio": 0.05},
        {"id": ids[2], "country": "GB", "starting_ratio": 0.0, "ratio": 0.05},
        {"id": ids[3], "country": "US", "starting_ratio": 0.01, "ratio": 0.05},
    ]
    assert api.sandbox.lookalikes(other) == [{"id": ids[1], "country": "US", "starting_ratio": 0.0, "ratio": 0.05}]


# ##### CREATED AND READ


def test_a_band_is_created_and_read_in_metas_shape(api: Api, origin: str):
    """starting_ratio 0.01 to ratio 0.05: 4 % of the country, the spec read back with its origin."""
    audience_id = created(lookalike(api, origin, {"country": "US", "starting_ratio": 0.01, "ratio": 0.05}))
    fields = (
        "name,subtype,customer_file_source,lookalike_spec,approximate_count_lower_bound,"
        "approximate_count_upper_bound,operation_status,is_value_based"
    )
    assert api.get(audience_id, params={"fields": fields}).json() == {
        "id": audience_id,
        "name": "lookalike",
        "subtype": "LOOKALIKE",
        "customer_file_source": None,
        "lookalike_spec": {
            "country": "US",
            "ratio": 0.05,
            "starting_ratio": 0.01,
            "type": "custom_ratio",
            "origin": [{"id": origin, "name": "seed", "type": "custom_audience"}],
        },
        "approximate_count_lower_bound": 7_200_000,
        "approximate_count_upper_bound": 8_800_000,
        "operation_status": {"code": 200, "description": "Normal"},  # by default ready at once
        "is_value_based": False,
    }


@pytest.mark.parametrize(
    "spec, ratio, kind",
    [
        ({"type": "similarity"}, 0.01, "similarity"),
        ({"type": "reach"}, 0.05, "reach"),
        ({"type": "custom_ratio", "ratio": 0.2}, 0.2, "custom_ratio"),
        ({"ratio": 0.07}, 0.07, "custom_ratio"),
    ],
)
def test_a_size_type_reads_as_its_ratio(api: Api, origin: str, spec: dict, ratio: float, kind: str):
    audience_id = created(lookalike(api, origin, {"country": "FR", **spec}))
    read = api.get(audience_id, params={"fields": "lookalike_spec"}).json()["lookalike_spec"]
    assert (read["ratio"], read["starting_ratio"], read["type"]) == (ratio, 0.0, kind)


def test_a_custom_audience_has_no_lookalike_spec_and_the_listing_shows_both(api: Api, origin: str):
    """Graph leaves the field out of an audience that has none; an unknown field is still an error."""
    assert api.get(origin, params={"fields": "lookalike_spec,subtype"}).json() == {"id": origin, "subtype": "CUSTOM"}
    assert_error(api.get(origin, params={"fields": "lookalike_specs"}), 400, 100, error_type="GraphMethodException")
    audience_id = created(lookalike(api, origin, {"country": "US", "ratio": 0.01}))
    listing = api.get(f"{ACCOUNT}/customaudiences", params={"fields": "subtype,lookalike_spec"}).json()["data"]
    assert listing == [
        {"id": origin, "subtype": "CUSTOM"},
        {
            "id": audience_id,
            "subtype": "LOOKALIKE",
            "lookalike_spec": {
                "country": "US",
                "ratio": 0.01,
                "starting_ratio": 0.0,
                "type": "custom_ratio",
                "origin": [{"id": origin, "name": "seed", "type": "custom_audience"}],
            },
        },
    ]


def test_a_lookalike_takes_no_users(api: Api, origin: str):
    audience_id = created(lookalike(api, origin, {"country": "US", "ratio": 0.01}))
    assert_error(api.users(audience_id, emails("a")), 400, 2650, message="(this one is LOOKALIKE)")
    assert_error(api.users(audience_id, emails("a"), method="DELETE"), 400, 2650, message="only customer file")
    assert_error(api.replace(audience_id, emails("a"), 1, 1, last=True), 400, 2650, message="only customer file")
    assert api.sandbox.member_keys(audience_id) == set()


def test_a_new_lookalike_populates_for_the_configured_reads():
    sandbox = GraphSandbox(config=config(lookalike_populating_reads=2), clock=Clock())
    api = Api(sandbox)
    origin = seed(api)
    audience_id = created(lookalike(api, origin, {"country": "US", "ratio": 0.01}))
    assert [api.status(audience_id)["code"] for _ in range(3)] == [441, 441, 200]
    assert api.status(origin)["code"] == 200  # the seed is not populating


def test_deleting_the_origin_leaves_its_lookalikes(api: Api, origin: str):
    audience_id = created(lookalike(api, origin, {"country": "US", "ratio": 0.01}))
    api.delete(origin)
    read = api.get(audience_id, params={"fields": "lookalike_spec"}).json()["lookalike_spec"]
    assert read["origin"] == [{"id": origin, "name": "seed", "type": "custom_audience"}]
    assert [held["id"] for held in api.sandbox.lookalikes(origin)] == [audience_id]


def test_a_state_file_from_before_lookalikes_opens_and_takes_them(tmp_path: Path):
    """The columns and tables added for lookalikes and values are added to an older state file."""
    path = tmp_path / "state.sqlite"
    GraphSandbox(path, config=config(), clock=Clock()).close()
    with sqlite3.connect(path) as db:
        for column in ("origin_audience_id", "lookalike_spec"):
            db.execute(f"ALTER TABLE audiences DROP COLUMN {column}")
        db.execute("DROP TABLE member_values")
        db.execute("DROP TABLE replace_values")
    db.close()
    sandbox = GraphSandbox(path, config=config(), clock=Clock())
    api = Api(sandbox)
    audience_id = created(lookalike(api, seed(api), {"country": "US", "ratio": 0.01}))
    assert api.get(audience_id, params={"fields": "lookalike_spec"}).json()["lookalike_spec"]["country"] == "US"
    sandbox.close()


# ##### VALUES OF A VALUE-BASED AUDIENCE


@pytest.fixture
def valued(api: Api) -> str:
    return api.create("valued", is_value_based=True)


def valued_rows(**values: Any) -> list[list[Any]]:
    return [[sha(f"{n}@example.com"), v] for n, v in values.items()]


@pytest.mark.parametrize(
    "value", ["44.5", "", None, -1, -0.5, True, False, [1], {"v": 1}, pytest.param(10**400, id="huge-int")]
)
def test_a_value_that_is_no_non_negative_number_makes_an_invalid_entry(api: Api, valued: str, value: Any):
    response = api.users(valued, [[sha("a@example.com"), value], [sha("b@example.com"), 2]], schema=VALUE_SCHEMA)
    body = assert_upload(response, valued, received=2, invalid=1)
    assert body["invalid_entry_samples"] == {
        f"{sha('a@example.com')},{value}": "invalid value for LOOKALIKE_VALUE (not a non-negative number)"
    }
    assert api.sandbox.member_keys(valued) == email_keys("b")
    assert api.sandbox.member_values(valued) == {member_key(EMAIL=sha("b@example.com")): 2.0}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_no_values(api: Api, valued: str, literal: str):
    """Python's JSON decoder reads these literals as floats; they are not numbers Meta takes."""
    body = '{"payload": {"schema": ["EMAIL", "LOOKALIKE_VALUE"], "data": [["%s", %s]]}}' % (sha("a"), literal)  # noqa: UP031
    response = api.call("POST", f"{valued}/users", content=body.encode(), headers={"content-type": "application/json"})
    assert_upload(response, valued, received=1, invalid=1)
    assert api.sandbox.member_values(valued) == {}


def test_a_row_without_an_identity_is_invalid_whatever_its_value(api: Api, valued: str):
    body = assert_upload(api.users(valued, [["", 5.0]], schema=VALUE_SCHEMA), valued, received=1, invalid=1)
    assert body["invalid_entry_samples"] == {",5.0": "no identifying field is given"}


def test_each_members_latest_value_is_held(api: Api, valued: str):
    """Zero, ints and floats are values; a row sent again (in one request or a later one) takes its latest
    value; the admin endpoint reports the same."""
    key = {n: member_key(EMAIL=sha(f"{n}@example.com")) for n in "abc"}
    assert_upload(api.users(valued, valued_rows(a=1.5, b=2, c=0), schema=VALUE_SCHEMA), valued, received=3)
    assert api.sandbox.member_values(valued) == {key["a"]: 1.5, key["b"]: 2.0, key["c"]: 0.0}
    rows = valued_rows(a=3) + valued_rows(b=7) + valued_rows(b=8.25)
    assert_upload(api.users(valued, rows, schema=VALUE_SCHEMA), valued, received=3)
    assert api.sandbox.member_values(valued) == {key["a"]: 3.0, key["b"]: 8.25, key["c"]: 0.0}
    admin = api.call("GET", "_sandbox/values", version=None, token=None, params={"audience_id": valued}).json()
    assert admin == {"data": dict(sorted(api.sandbox.member_values(valued).items()))}


def test_a_value_goes_with_its_member(api: Api, valued: str):
    api.users(valued, valued_rows(a=1, b=2, c=3), schema=VALUE_SCHEMA)
    api.users(valued, valued_rows(b=0), schema=VALUE_SCHEMA, method="DELETE")
    assert api.sandbox.member_values(valued) == {
        member_key(EMAIL=sha("a@example.com")): 1.0,
        member_key(EMAIL=sha("c@example.com")): 3.0,
    }
    assert api.sandbox.member_keys(valued) == set(api.sandbox.member_values(valued))


def test_a_replace_sets_the_values_of_its_rows_only(api: Api, valued: str):
    """Values sent in a replace session become the audience's on its last batch; a restarted session's first
    values are dropped with its rows."""
    api.users(valued, valued_rows(a=1, b=2), schema=VALUE_SCHEMA)
    api.post(f"{valued}/usersreplace", replace_body(valued_rows(z=99), 1))
    api.post(f"{valued}/usersreplace", replace_body(valued_rows(b=5), 1))  # batch 1 again: starts over
    assert api.sandbox.member_values(valued) == {
        member_key(EMAIL=sha("a@example.com")): 1.0,
        member_key(EMAIL=sha("b@example.com")): 2.0,
    }
    api.post(f"{valued}/usersreplace", replace_body(valued_rows(c=6.5, b=4), 2, last=True))
    assert api.sandbox.member_values(valued) == {
        member_key(EMAIL=sha("b@example.com")): 4.0,
        member_key(EMAIL=sha("c@example.com")): 6.5,
    }
    assert api.sandbox.member_keys(valued) == email_keys("b", "c")


def replace_body(rows: list, batch_seq: int, last: bool = False) -> dict[str, Any]:
    session = {"session_id": 41, "batch_seq": batch_seq, "last_batch_flag": last}
    return {"payload": {"schema": list(VALUE_SCHEMA), "data": rows}, "session": session}


def test_an_audience_that_is_not_value_based_holds_no_values(api: Api):
    audience_id = api.create()
    api.users(audience_id, emails("a", "b"))
    api.replace(audience_id, emails("c"), 3, 1, last=True)
    assert api.sandbox.member_values(audience_id) == {}
