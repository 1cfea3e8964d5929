"""The Meta resource: a Graph API client for the configured ad account, or the built-in sandbox.

With `META_ACCESS_TOKEN` unset, definitions configure `sandbox_state` instead: the client then talks to
the Graph API sandbox (in process, through an httpx transport) whose state lives in a SQLite file under
the data directory, so the UI shows what "Meta" holds after each run. `sandbox_faults`
(`META_SANDBOX_FAULTS`) makes it throttle, fail and stall like Meta; its clock is a demo's, so the waits
are scaled down with it (`SANDBOX_POLICY`).
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from audience_assets.core.config import Tenant
from audience_assets.core.meta.client import DEFAULT_API_VERSION, DEFAULT_GRAPH_URL, GraphClient
from audience_assets.core.meta.credentials import tenant_token, token_from_secret
from audience_assets.core.policies import MetaPolicy
from audience_assets.standins.graph_sandbox import Faults, GraphSandbox, SandboxConfig

# The sandbox answers at once and holds no hour-long budget: back-off starts at 1 s and never exceeds 15 s,
# so a demo with META_SANDBOX_FAULTS shows the client riding out throttles in seconds, not minutes; and a demo
# does not wait ten minutes on a session the sandbox leaves open.
SANDBOX_POLICY = {
    "throttle_base_seconds": 1.0,
    "throttle_max_seconds": 15.0,
    "transient_base_seconds": 0.5,
    "settle_seconds": 20.0,
}


class MetaAudiences(dg.ConfigurableResource):
    """Credentials and endpoint for the Marketing API. Secrets arrive as `dg.EnvVar`, resolved at run time.

    The fields are the implicit tenant's account. A declared tenant (tenants.yaml) brings its own ad account
    and names its token's environment variable or secret, read when its upload runs.
    """

    access_token: str | None = Field(
        default=None, description="META_ACCESS_TOKEN; sent only in the Authorization header"
    )
    access_token_secret_id: str | None = Field(
        default=None,
        description="META_ACCESS_TOKEN_SECRET_ID: read the token from AWS Secrets Manager at run time instead",
    )
    ad_account_id: str = Field(default="", description="META_AD_ACCOUNT_ID, act_<digits> (the implicit tenant's)")
    app_secret: str | None = Field(default=None, description="META_APP_SECRET; adds appsecret_proof to every call")
    graph_url: str = DEFAULT_GRAPH_URL
    api_version: str = DEFAULT_API_VERSION
    sandbox_state: str | None = Field(
        default=None, description="SQLite file of the built-in sandbox; set = sandbox mode"
    )
    sandbox_faults: str = Field(default="", description="META_SANDBOX_FAULTS: the sandbox's fault profile")
    throttle_max_seconds: float = Field(
        default=MetaPolicy.throttle_max_seconds, description="META_THROTTLE_MAX_SECONDS: the longest single wait"
    )
    upload_deadline_seconds: float = Field(
        default=MetaPolicy.deadline_seconds,
        description="META_UPLOAD_DEADLINE_SECONDS: an upload not done by then fails with dead letters",
    )
    _sandbox: GraphSandbox | None = PrivateAttr(default=None)

    def sandbox(self) -> GraphSandbox | None:
        if self.sandbox_state and self._sandbox is None:
            self._sandbox = GraphSandbox(self.sandbox_state, SandboxConfig(faults=Faults.parse(self.sandbox_faults)))
        return self._sandbox

    def policy(self) -> MetaPolicy:
        """The deployment's `MetaPolicy` (its two settings given, every other value the policy's default); the
        sandbox's is scaled down to a demo's clock."""
        chosen = {"throttle_max_seconds": self.throttle_max_seconds, "deadline_seconds": self.upload_deadline_seconds}
        return MetaPolicy(**{**chosen, **(SANDBOX_POLICY if self.sandbox_state else {})})

    def ad_account(self, tenant: Tenant | None = None) -> str:
        """The ad account a tenant's audiences are written to (never another tenant's)."""
        if tenant:
            return tenant.meta_ad_account_id
        if not self.ad_account_id:
            raise ValueError("no Meta ad account: set META_AD_ACCOUNT_ID")
        return self.ad_account_id

    def token(self, tenant: Tenant | None = None) -> str:
        """The access token: the sandbox's, the tenant's (`core.meta.credentials`), or this resource's, given
        directly or as a Secrets Manager secret read per run."""
        if self.sandbox_state:  # the built-in sandbox: its one token serves every account
            return self.access_token or ""
        if tenant:
            return tenant_token(tenant)
        if self.access_token:
            return self.access_token
        if not self.access_token_secret_id:
            raise ValueError("no Meta access token: set META_ACCESS_TOKEN or META_ACCESS_TOKEN_SECRET_ID")
        return token_from_secret(self.access_token_secret_id)

    def client(self, tenant: Tenant | None = None) -> GraphClient:
        sandbox = self.sandbox()
        if sandbox is not None:  # the sandbox knows every tenant's account
            sandbox.config.ad_accounts.setdefault(
                self.ad_account(tenant), {"name": "Sandbox ad account", "tos_accepted": True}
            )
        return GraphClient(
            access_token=self.token(tenant),
            base_url=self.graph_url,
            api_version=self.api_version,
            app_secret=self.app_secret,
            transport=sandbox.transport() if sandbox else None,
            policy=self.policy(),
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
