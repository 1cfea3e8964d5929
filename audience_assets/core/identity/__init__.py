"""Meta-grade identifier normalization and hashing.

`normalize` and `meta_value` are the public, one-value-at-a-time reference (pure Python); the
pipeline runs the same rules in DuckDB SQL over Parquet (`identity.sql`). Both are tested to agree.
"""

from audience_assets.core.identity.reference import country_code, meta_value, normalize, normalize_with_reason, sha256
from audience_assets.core.identity.rules import HASHED_KEYS, META_KEYS

__all__ = ["HASHED_KEYS", "META_KEYS", "country_code", "meta_value", "normalize", "normalize_with_reason", "sha256"]
