"""Ingest: what sources deliver to the landing zone, validated, normalized and hashed."""
