"""The Meta resource: a Graph API client for the configured ad account, or the built-in sandbox.

With `META_ACCESS_TOKEN` unset, definitions configure `sandbox_state` instead: the client then talks to
the Graph API sandbox (in process, through an httpx transport) whose state lives in a SQLite file under
the data directory, so the UI shows what "Meta" holds after each run.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from audience_assets.meta.client import DEFAULT_API_VERSION, DEFAULT_GRAPH_URL, GraphClient, RetryPolicy
from audience_assets.meta.sandbox import GraphSandbox


class MetaAudiences(dg.ConfigurableResource):
    """Credentials and endpoint for the Marketing API. Secrets arrive as `dg.EnvVar`, resolved at run time."""

    access_token: str = Field(description="META_ACCESS_TOKEN; sent only in the Authorization header")
    ad_account_id: str = Field(description="META_AD_ACCOUNT_ID, act_<digits>")
    app_secret: str | None = Field(default=None, description="META_APP_SECRET; adds appsecret_proof to every call")
    graph_url: str = DEFAULT_GRAPH_URL
    api_version: str = DEFAULT_API_VERSION
    sandbox_state: str | None = Field(default=None, description="SQLite file of the built-in sandbox; set = sandbox mode")
    timeout_seconds: float = 60.0
    transient_attempts: int = 5
    upload_concurrency: int = 4
    _sandbox: GraphSandbox | None = PrivateAttr(default=None)

    def sandbox(self) -> GraphSandbox | None:
        if self.sandbox_state and self._sandbox is None:
            self._sandbox = GraphSandbox(self.sandbox_state)
        return self._sandbox

    def client(self) -> GraphClient:
        sandbox = self.sandbox()
        return GraphClient(access_token=self.access_token, base_url=self.graph_url, api_version=self.api_version,
                           app_secret=self.app_secret, transport=sandbox.transport() if sandbox else None,
                           retry=RetryPolicy(timeout_seconds=self.timeout_seconds,
                                             transient_attempts=self.transient_attempts))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
