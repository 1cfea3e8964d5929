"""Graph API errors, classified by `code` and `error_subcode` (never by HTTP status).

Meta's error-handling guide and the Marketing API error reference define the codes; the classes
decide what the client does: back off (throttled), retry briefly (transient), or stop and explain (fatal).
"""

from __future__ import annotations

import enum
import re

THROTTLING_CODES = frozenset({4, 17, 32, 341, 613, *range(80000, 80015)})
TRANSIENT_CODES = frozenset({1, 2})
REPLACE_BUSY = (2650, 1870145)  # another replace (or an update) is in progress: wait minutes, like a throttle


class ErrorClass(enum.Enum):
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    FATAL = "fatal"


_SECRET_PATTERNS = [  # (pattern, replacement)
    (re.compile(r"(access_token|appsecret_proof|client_secret)=[^&\s\"']+", re.IGNORECASE), r"\1=***"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+"), r"\1***"),
]


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with tokens, app secrets and proofs replaced by "***"."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def classify(code: int | None, subcode: int | None = None, *, is_transient: bool = False) -> ErrorClass:
    if code in THROTTLING_CODES:
        return ErrorClass.THROTTLED
    if (code, subcode) == REPLACE_BUSY:
        return ErrorClass.THROTTLED  # a busy audience clears by waiting, exactly like a throttle
    if code in TRANSIENT_CODES or is_transient:
        return ErrorClass.TRANSIENT
    return ErrorClass.FATAL


class MetaApiError(RuntimeError):
    """A Graph API error response, with what to do about it in the message. Never carries a token."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        error_type: str | None = None,
        fbtrace_id: str | None = None,
        status: int | None = None,
        is_transient: bool = False,
        hint: str = "",
    ):
        self.code, self.subcode, self.error_type = code, subcode, error_type
        self.fbtrace_id, self.status, self.is_transient = fbtrace_id, status, is_transient
        self.error_class = classify(code, subcode, is_transient=is_transient)
        self.api_message = message
        detail = (
            f"code {code}" + (f"/{subcode}" if subcode else "") + (f", fbtrace_id {fbtrace_id}" if fbtrace_id else "")
        )
        super().__init__(f"Meta API error ({detail}): {message}" + (f" — {hint}" if hint else ""))


class MetaTransportError(RuntimeError):
    """The request did not complete (timeout, connection reset, HTML error page): it may or may not
    have reached Meta, so only idempotent requests are retried blindly."""


class MetaPreflightError(RuntimeError):
    """The audience or the account cannot take uploads; the message says how to fix it."""


HINTS: dict[tuple[int, int | None], str] = {
    (190, None): "the access token is invalid or expired: create a new system-user token and set META_ACCESS_TOKEN",
    (104, None): "no access token was sent: set META_ACCESS_TOKEN",
    (102, None): "the session key is invalid: create a new token",
    (200, 1870090): "accept the Custom Audience terms for this ad account at "
    "https://business.facebook.com/ads/manage/customaudiences/tos/?act=<ad account id>",
    (200, None): "the token lacks permission on this ad account: grant ads_management to the system user",
    (294, None): "the token lacks the ads_management permission",
    (10, None): "the app lacks a permission this call needs",
    (100, 1713230): "Meta flagged this audience (operation_status 471): rename it or remove sensitive wording, "
    "then resolve it in Ads Manager",
    (100, 33): "the ad account or audience id does not exist or the token cannot see it: check META_AD_ACCOUNT_ID",
    (2635, None): "this Graph API version is deprecated: set META_API_VERSION to a current version",
    (368, None): "Meta temporarily blocked this action as abusive: stop and review the account",
    (2650, 1870144): "the audience is too large for replace (100M+): use mirror mode",
    (2650, 1870158): "the 90-minute replace window passed: the next run replaces again from the start",
}


def hint_for(code: int | None, subcode: int | None) -> str:
    return HINTS.get((code or 0, subcode), HINTS.get((code or 0, None), ""))
