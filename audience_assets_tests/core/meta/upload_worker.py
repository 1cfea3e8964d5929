"""A separate upload process for the crash test: `python -m audience_assets_tests.core.meta.upload_worker
<data_dir> <audience> <mode> <graph_url>` delivers the stored plan against the sandbox at `graph_url`."""

from __future__ import annotations

import sys

from audience_assets.core.audience.plan import load_plan
from audience_assets.core.meta.client import GraphClient
from audience_assets.core.meta.delivery import deliver
from audience_assets.core.policies import MetaPolicy
from audience_assets.core.settings import SANDBOX_AD_ACCOUNT, SANDBOX_TOKEN
from audience_assets.core.store import LocalStore
from audience_assets_tests.core.meta.uploads import spec


def main(data_dir: str, audience: str, mode: str, graph_url: str) -> None:
    storage = LocalStore(data_dir)
    plan = load_plan(storage, audience)
    client = GraphClient(access_token=SANDBOX_TOKEN, base_url=graph_url, policy=MetaPolicy(concurrency=2))
    try:
        deliver(
            storage,
            audience,
            spec(mode, chunk_rows=1_000),
            plan,
            client,
            ad_account_id=SANDBOX_AD_ACCOUNT,
        )
    finally:
        client.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
