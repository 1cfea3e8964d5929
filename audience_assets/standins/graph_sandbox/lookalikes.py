"""Lookalike audiences as Meta documents them (Marketing API, "Lookalike Audiences"): `POST
/act_{id}/customaudiences` with `subtype=LOOKALIKE`, an `origin_audience_id` (the seed: an audience of the same
ad account with at least 100 members) and a `lookalike_spec` (a country, and a size: the top `ratio` of the
country's people, 0.01 to 0.20 in steps of 0.01, or the band from `starting_ratio` to `ratio`). Meta refuses a
second lookalike of one seed with the same country and size (2654, subcode 1713007). The country list is the
sandbox's own (ISO 3166-1 alpha-2, as Meta asks), not the project's: a stand-in follows Meta's documents, so it
can catch the code under test getting them wrong."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from audience_assets.standins.graph_sandbox.validation import GraphError, json_object, unknown

if TYPE_CHECKING:
    from audience_assets.standins.graph_sandbox.config import SandboxConfig
    from audience_assets.standins.graph_sandbox.state import SandboxState

# ISO 3166-1 alpha-2: every officially assigned code (249).
COUNTRIES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY
    BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO
    FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM
    JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE
    RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT
    TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split()
)
# Meta's older size types, as the sandbox reads them: "similarity" is the top 1 % of the country, "reach" the
# top 5 % (Meta's documents describe them as the most similar and the widest reach, without a figure);
# "custom_ratio" takes `ratio`. A spec that gives a ratio is read back as custom_ratio.
TYPE_PERCENTS = {"similarity": 1, "reach": 5}
SIZE_TYPES = ("similarity", "reach", "custom_ratio")
MIN_SEED_MEMBERS = 100  # "Origin audiences must have at least 100 members"
# The sandbox's wording: Meta documents these limits but not the text of the errors that enforce them.
RATIO_ERROR = "(#100) Param lookalike_spec[ratio] must be between 0.01 and 0.20 in steps of 0.01"
STARTING_RATIO_ERROR = "(#100) Param lookalike_spec[starting_ratio] must be less than lookalike_spec[ratio]"
STARTING_STEP_ERROR = "(#100) Param lookalike_spec[starting_ratio] must be between 0.00 and 0.19 in steps of 0.01"
SEED_TOO_SMALL = (
    "(#2654) Source Audience Is Too Small: The source audience must contain at least 100 people to create a lookalike."
)
# Meta's text, verbatim (facebook-php-business-sdk issues #181 and #477), its apostrophe a U+2019.
DUPLICATE = (
    "(#2654) Can\u2019t Create a Duplicate Lookalike: You've already created a lookalike audience with the same "
    "source, country and size. Please try using a different source or different specifications."
)


def create(
    state: SandboxState, config: SandboxConfig, account: str, name: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Create a lookalike of `origin_audience_id` in `account`: the request's parameters, then its origin, its
    spec, the seed's size and that no live lookalike of the seed has the same country and size."""
    origin_id = str(params.get("origin_audience_id", "") or "").strip()
    if not origin_id:
        raise GraphError(400, 100, "(#100) The parameter origin_audience_id is required")
    raw = json_object(params, "lookalike_spec", GraphError(400, 100, "(#100) The parameter lookalike_spec is required"))
    origin = state.audience(origin_id)
    if origin is None or origin["account"] != account:
        raise unknown("POST", origin_id)
    spec = parse_spec(raw)
    if state.member_count(origin_id) < MIN_SEED_MEMBERS:
        raise GraphError(400, 2654, SEED_TOO_SMALL)
    size = (spec["country"], _percent(spec["starting_ratio"]), _percent(spec["ratio"]))
    for held in state.lookalikes(origin_id, account):
        if (held["country"], _percent(held["starting_ratio"]), _percent(held["ratio"])) == size:
            raise GraphError(400, 2654, DUPLICATE, subcode=1713007)
    description = str(params.get("description", "") or "")
    audience_id = state.create_lookalike(account, name, description, origin_id, spec)
    state.set_populating(audience_id, config.lookalike_populating_reads)
    return {"id": audience_id}


def parse_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """The spec normalized: {country, ratio, starting_ratio, type}, the ratios whole hundredths."""
    country = _country(raw)
    kind = raw.get("type")
    if kind is not None and kind not in SIZE_TYPES:
        raise GraphError(400, 100, f"(#100) Param lookalike_spec[type] must be one of {{{', '.join(SIZE_TYPES)}}}")
    if raw.get("ratio") is not None:
        ratio, kind = _hundredths(raw["ratio"], RATIO_ERROR), "custom_ratio"
    elif kind in TYPE_PERCENTS:
        ratio = TYPE_PERCENTS[kind]
    else:
        raise GraphError(400, 100, "(#100) Param lookalike_spec[ratio] is required (or a type: similarity or reach)")
    if not 1 <= ratio <= 20:
        raise GraphError(400, 100, RATIO_ERROR)
    start = _hundredths(raw.get("starting_ratio", 0) or 0, STARTING_STEP_ERROR)
    if start < 0:
        raise GraphError(400, 100, STARTING_STEP_ERROR)
    if start >= ratio:
        raise GraphError(400, 100, STARTING_RATIO_ERROR)
    return {"country": country, "ratio": ratio / 100, "starting_ratio": start / 100, "type": kind}


def _country(raw: dict[str, Any]) -> str:
    """The spec's country: an upper-case ISO 3166-1 alpha-2 code. Meta also takes a `location_spec` (several
    countries or regions); the sandbox does not model it."""
    if "location_spec" in raw:
        raise GraphError(
            400, 100, "(#100) lookalike_spec[location_spec] is not supported by the sandbox: give a country"
        )
    country = raw.get("country")
    if country in (None, ""):
        raise GraphError(
            400,
            2654,
            "(#2654) Missing Locations in Lookalike Spec: The lookalike spec must contain one of location_spec or "
            "country field to create a lookalike.",
            subcode=1713159,
        )
    if not isinstance(country, str) or country not in COUNTRIES:
        raise GraphError(
            400,
            2654,
            f"(#2654) Invalid Lookalike Country: {country} cannot be recognized as a valid country for creating "
            "lookalikes, please verify the format.",
            subcode=1713089,
        )
    return country


def _hundredths(value: Any, error: str) -> int:
    """A ratio as whole hundredths; `error` when it is no number or not a step of 0.01. Meta takes a number
    or its text (a ratio sent as "0.01" is answered, as facebook-php-business-sdk issue #477 shows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise GraphError(400, 100, error)
    try:
        number = float(value)
    except ValueError:
        raise GraphError(400, 100, error) from None
    if not math.isfinite(number) or abs(number * 100 - round(number * 100)) > 1e-9:
        raise GraphError(400, 100, error)
    return round(number * 100)


def _percent(ratio: float) -> int:
    return round(ratio * 100)
