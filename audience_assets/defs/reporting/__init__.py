"""Reporting: what each tenant's audiences cost, per day."""
