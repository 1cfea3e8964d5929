"""The public identity API, at its stable import path: Meta's normalization and hashing of one value at a time
(`normalize`, `meta_value`, ...). The implementation, and the DuckDB SQL the pipeline runs, live in
`audience_assets.core.identity`."""

from audience_assets.core.identity import (
    HASHED_KEYS,
    META_KEYS,
    country_code,
    meta_value,
    normalize,
    normalize_with_reason,
    sha256,
)

__all__ = ["HASHED_KEYS", "META_KEYS", "country_code", "meta_value", "normalize", "normalize_with_reason", "sha256"]
