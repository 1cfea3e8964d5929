"""Dagster only: each stage a folder with its assets, checks, sensors and jobs, built from the configuration.

ingest/ (partner data, the CRM export, opt-outs; the landing-zone sensor), clean_room/ (the first-party
table, each partner's match), activation/ (members, chunks, the Meta audience), reporting/ (cost per tenant),
operations/ (retention, dead letters, replay). `resources/` holds the adapters that choose an engine,
`metadata.py` what every step records. The engines they call live in `core`.
"""
