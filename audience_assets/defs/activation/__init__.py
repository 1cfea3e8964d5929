"""Activation: per tenant, its audiences' members, chunks and Meta custom audiences."""
