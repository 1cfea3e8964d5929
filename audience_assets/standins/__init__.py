"""Local stand-ins for the services the pipeline talks to: the Graph API sandbox and the local clean room.

They serve `dagster dev` on a fresh clone and the tests; production code never imports them, except the
adapters in `defs` that choose them when no real service is configured.
"""
