"""A local stand-in for Meta's Graph API, strict enough that passing against it means passing against Meta.

It implements the customer-list Custom Audience contract as Meta documents it: API versions, token and
`appsecret_proof` checks, object lookup, audience creation, payload and per-row validation (invalid rows
counted in `num_invalid_entries`), the upload-session state machine with every replace rule and subcode,
Graph error envelopes, the `X-Business-Use-Case-Usage` header with error 80003 when a per-account rate budget
is exceeded, and fault injection (`faults`). It also creates lookalike audiences from a seed (`lookalikes`) and
holds each value-based audience's LOOKALIKE_VALUE per member. `server` routes and answers, `validation` checks
a request (`cells` each cell of an upload), `state` holds what "Meta" holds (SQLite).
`python -m audience_assets.standins.graph_sandbox` serves it.
"""

from audience_assets.standins.graph_sandbox.config import SandboxConfig, SandboxResponse
from audience_assets.standins.graph_sandbox.faults import Faults
from audience_assets.standins.graph_sandbox.http import SandboxServer
from audience_assets.standins.graph_sandbox.server import GraphSandbox
from audience_assets.standins.graph_sandbox.validation import GraphError

__all__ = ["Faults", "GraphError", "GraphSandbox", "SandboxConfig", "SandboxResponse", "SandboxServer"]
