"""Where everything lives in the store: one key layout, the same locally and on S3.

landing/      what sources deliver (partners/<partner>/, first_party/, suppression/)
staging/      normalized first-party data, suppression list, quarantines (retention applies)
clean_room/   the configured tables (first_party/, partners/<partner>/) and query results
audiences/    members, payload rows and upload chunks per audience
meta/         per audience: the Meta audience it is bound to (binding.json) and, under that audience's id, what
              Meta confirmed, the upload ledger and dead letters
audit/        one append-only record per upload and per change of binding (no personal data)
reports/      per-tenant cost reports (no personal data)
"""

from __future__ import annotations

LANDING_ROOT = "landing/"
LANDING_PARTNERS = "landing/partners/"
FIRST_PARTY_CUSTOMERS = "staging/first_party/customers.parquet"
FIRST_PARTY_QUARANTINE = "staging/quarantine/first_party.parquet"
SUPPRESSION_LIST = "staging/suppression/suppressed.parquet"
SUPPRESSION_RETIRED = "staging/suppression/retired.parquet"  # opt-outs whose plaintext files retention deleted
SUPPRESSION_QUARANTINE = "staging/quarantine/suppression.parquet"
CLEAN_ROOM_FIRST_PARTY = "clean_room/first_party/data.parquet"


def partner_table(partner: str) -> str:
    return f"clean_room/partners/{partner}/data.parquet"


def partner_quarantine(partner: str) -> str:
    return f"staging/quarantine/partners/{partner}.parquet"


def matches(partner: str) -> str:
    return f"clean_room/matches/{partner}/matches.parquet"


CLEAN_ROOM_RESULTS = "clean_room/results/"  # the local engine's results (on AWS: AUDIENCE_RESULTS_BUCKET)


def clean_room_results(partner: str) -> str:
    return f"{CLEAN_ROOM_RESULTS}{partner}/"


def audience_members(audience: str) -> str:
    return f"audiences/{audience}/members.parquet"


def holdout_arms(audience: str) -> str:
    """Every eligible customer id with its arm (control or treatment): stays in the advertiser's storage."""
    return f"audiences/{audience}/holdout.parquet"


def holdout_record(audience: str) -> str:
    """The holdout split the audience's members were last published with (a change waits for approval)."""
    return f"audiences/{audience}/holdout.json"


def upload_plan(audience: str) -> str:
    return f"audiences/{audience}/upload_plan.json"


def chunk(audience: str, upload_id: str, kind: str, index: int) -> str:
    return f"audiences/{audience}/chunks/{upload_id}/{kind}/chunk-{index:05d}.parquet"


def wanted_rows(audience: str) -> str:
    """Every payload row the audience wants (digests only): what a plan is rebuilt from when the Meta audience
    it was planned against is gone (`core.audience.plan.rebase`)."""
    return f"audiences/{audience}/wanted.parquet"


def binding(audience: str) -> str:
    """Which Meta audience (id, ad account, name) this audience is bound to (`core.meta.binding`)."""
    return f"meta/{audience}/binding.json"


def confirmed(audience: str, audience_id: str) -> str:
    """What Meta confirmed holding for the Meta audience `audience_id`: the record is kept per Meta id, so it
    can never claim rows for an audience that did not receive them."""
    return f"meta/{audience}/{audience_id}/confirmed.parquet"


def lookalike(audience: str, key: str) -> str:
    """Which Meta lookalike of the audience `key` (e.g. `US-1`) is, and the seed it was made from
    (`core.meta.lookalikes`)."""
    return f"meta/{audience}/lookalikes/{key}.json"


def legacy_confirmed(audience: str) -> str:
    """Where confirmed rows lived before records were kept per Meta id (read once, to migrate)."""
    return f"meta/{audience}/confirmed.parquet"


def upload_ledger(audience: str, audience_id: str, upload_id: str) -> str:
    return f"meta/{audience}/{audience_id}/uploads/{upload_id}/"


def delivery_record(source: str) -> str:
    """A source's last accepted delivery: counts, files and versions (`core.ingestion.guards`), no data."""
    return f"staging/deliveries/{source}.json"


def arrival_log(source: str) -> str:
    """What a source delivered, in the order it arrived (`core.ingestion.arrivals`): identities, no data."""
    return f"staging/arrivals/{source}.json"


def audit(audience: str, stamp: str, audience_id: str, what: str) -> str:
    """An audit record: `what` is an upload id, or `binding` for a change of the Meta audience bound."""
    return f"audit/{audience}/{stamp}-{audience_id}-{what}.json"


DEAD_LETTER_RUNS = "dead_letters/runs/"
TENANT_COSTS = "reports/tenant_costs.csv"


def dead_letter_run(run_id: str) -> str:
    return f"{DEAD_LETTER_RUNS}{run_id}.json"
