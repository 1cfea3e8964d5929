"""Where a Meta access token comes from: an environment variable, or AWS Secrets Manager (read per run, so a
rotated secret takes effect without a redeploy). Tokens are returned, never logged."""

from __future__ import annotations

import json

import boto3

from audience_assets.core.config import Tenant
from audience_assets.core.settings import token_variable


def token_from_secret(secret_id: str) -> str:
    """The secret's value: a plain string, or JSON with "access_token"."""
    raw = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    try:
        value = json.loads(raw)
    except ValueError:
        return raw.strip()
    if isinstance(value, dict) and value.get("access_token"):
        return str(value["access_token"])
    raise ValueError(f'secret {secret_id} holds JSON without an "access_token" field')


def tenant_token(tenant: Tenant) -> str:
    """A declared tenant's token: from its variable (`meta_token_env`) or its secret (`meta_token_secret_id`)."""
    if tenant.meta_token_env:
        token = token_variable(tenant.meta_token_env)
        if not token:
            raise ValueError(
                f"no Meta access token for ad account {tenant.meta_ad_account_id}: {tenant.meta_token_env} is not set"
            )
        return token
    assert tenant.meta_token_secret_id  # a tenant names exactly one source (config.Tenant)
    return token_from_secret(tenant.meta_token_secret_id)
