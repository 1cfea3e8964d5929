"""From clean-room matches to the rows Meta receives: `selection` (members, opt-outs removed), `plan` (payload
rows, the delta against what Meta holds, chunks), `floor` (the privacy floor), `outbound` (the last look at
every cell), and `delivery` (the upload and what Meta then holds). All work is DuckDB over Parquet; Python
only ever sees counts and file names."""
