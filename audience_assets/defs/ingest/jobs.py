"""The ingestion jobs `landing_zone_sensor` launches, one per kind of delivery."""

import dagster as dg

PARTNER_DATA_JOB = "partner_data_job"
FIRST_PARTY_JOB = "first_party_job"
SUPPRESSION_JOB = "suppression_job"
LANDING_REPORT_JOB = "landing_zone_report_job"


def build_ingest_jobs() -> list:  # of unresolved asset jobs
    return [
        dg.define_asset_job(
            PARTNER_DATA_JOB,
            selection=["partner_data"],
            description="Ingest one partner's delivery (launched by landing_zone_sensor).",
        ),
        dg.define_asset_job(
            FIRST_PARTY_JOB,
            selection=["first_party_customers"],
            description="Ingest the CRM export (launched by landing_zone_sensor).",
        ),
        dg.define_asset_job(
            SUPPRESSION_JOB,
            selection=["suppression_list"],
            description="Ingest opt-out files (launched by landing_zone_sensor).",
        ),
        dg.define_asset_job(
            LANDING_REPORT_JOB,
            selection=["landing_zone_report"],
            description="Report what the landing zone holds that no source reads (launched by landing_zone_sensor).",
        ),
    ]
