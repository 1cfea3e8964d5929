"""Ingestion: files delivered to the landing zone, read under their contract (`read`), judged row by row with
exact accounting (`passes`), and written as the partner table (`partner`), the first-party customers
(`first_party`) or the opt-outs (`suppression`); `deliveries` says which files count, `retention` deletes
plaintext past its time."""
