"""The engines: everything the pipeline does, without Dagster.

Nothing under `core` imports dagster (a test imports every module in a fresh interpreter to prove it):
storage, settings and configuration, identifier normalization, ingestion, the clean room, audience
planning and delivery, and the Graph API client. `defs/` wires these to Dagster; `standins/` plays AWS
Clean Rooms and the Graph API locally.
"""
