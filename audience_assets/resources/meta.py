"""The Meta resource: a Graph API client for the configured ad account, or the built-in sandbox.

With `META_ACCESS_TOKEN` unset, definitions configure `sandbox_state` instead: the client then talks to
the Graph API sandbox (in process, through an httpx transport) whose state lives in a SQLite file under
the data directory, so the UI shows what "Meta" holds after each run.
"""

from __future__ import annotations

import json

import boto3
import dagster as dg
from pydantic import Field, PrivateAttr

from audience_assets.meta.client import DEFAULT_API_VERSION, DEFAULT_GRAPH_URL, GraphClient, RetryPolicy
from audience_assets.meta.sandbox import GraphSandbox


class MetaAudiences(dg.ConfigurableResource):
    """Credentials and endpoint for the Marketing API. Secrets arrive as `dg.EnvVar`, resolved at run time."""

    access_token: str | None = Field(default=None, description="META_ACCESS_TOKEN; sent only in the Authorization header")
    access_token_secret_id: str | None = Field(
        default=None, description="META_ACCESS_TOKEN_SECRET_ID: read the token from AWS Secrets Manager at run time instead")
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

    def token(self) -> str:
        """The access token: given directly, or the secret's value (a plain string, or JSON with
        "access_token"). Fetched per run, so a rotated secret takes effect without a redeploy."""
        if self.access_token:
            return self.access_token
        if not self.access_token_secret_id:
            raise ValueError("no Meta access token: set META_ACCESS_TOKEN or META_ACCESS_TOKEN_SECRET_ID")
        raw = boto3.client("secretsmanager").get_secret_value(SecretId=self.access_token_secret_id)["SecretString"]
        try:
            value = json.loads(raw)
        except ValueError:
            return raw.strip()
        if isinstance(value, dict) and value.get("access_token"):
            return str(value["access_token"])
        raise ValueError(f"secret {self.access_token_secret_id} holds JSON without an \"access_token\" field")

    def client(self) -> GraphClient:
        sandbox = self.sandbox()
        return GraphClient(access_token=self.token(), base_url=self.graph_url, api_version=self.api_version,
                           app_secret=self.app_secret, transport=sandbox.transport() if sandbox else None,
                           retry=RetryPolicy(timeout_seconds=self.timeout_seconds,
                                             transient_attempts=self.transient_attempts))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
