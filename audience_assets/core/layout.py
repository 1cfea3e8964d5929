"""Where everything lives in the store: one key layout, the same locally and on S3.

landing/      what sources deliver (partners/<partner>/, first_party/, suppression/)
staging/      normalized first-party data, suppression list, quarantines (retention applies)
clean_room/   the configured tables (first_party/, partners/<partner>/) and query results
audiences/    members, payload rows and upload chunks per audience
meta/         what Meta confirmed per audience, the upload ledger and dead letters
audit/        one append-only record per upload (no personal data)
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


def clean_room_results(partner: str) -> str:
    return f"clean_room/results/{partner}/"


def audience_members(audience: str) -> str:
    return f"audiences/{audience}/members.parquet"


def upload_plan(audience: str) -> str:
    return f"audiences/{audience}/upload_plan.json"


def chunk(audience: str, upload_id: str, kind: str, index: int) -> str:
    return f"audiences/{audience}/chunks/{upload_id}/{kind}/chunk-{index:05d}.parquet"


def confirmed(audience: str) -> str:
    return f"meta/{audience}/confirmed.parquet"


def delivery_record(source: str) -> str:
    """A source's last accepted delivery: counts, files and versions (`core.ingestion.guards`), no data."""
    return f"staging/deliveries/{source}.json"


def audit(audience: str, stamp: str, upload_id: str) -> str:
    return f"audit/{audience}/{stamp}-{upload_id}.json"


DEAD_LETTER_RUNS = "dead_letters/runs/"
TENANT_COSTS = "reports/tenant_costs.csv"


def dead_letter_run(run_id: str) -> str:
    return f"{DEAD_LETTER_RUNS}{run_id}.json"
