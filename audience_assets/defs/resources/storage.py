"""The storage resource: chooses the store of this deployment (a local folder or S3 with SSE-KMS).

The stores themselves are `core.store.LocalStore` and `core.store.S3Store`; assets call `store()`.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from audience_assets.core.policies import LOCK_WAIT_SECONDS
from audience_assets.core.store import LocalStore, S3Store, Store


class Storage(dg.ConfigurableResource):
    lock_wait_seconds: float = LOCK_WAIT_SECONDS  # AUDIENCE_LOCK_WAIT_SECONDS

    def store(self) -> Store:
        raise NotImplementedError


class LocalStorage(Storage):
    """`AUDIENCE_DATA_DIR`: a folder laid out like the bucket."""

    data_dir: str

    def store(self) -> LocalStore:
        return LocalStore(self.data_dir, lock_wait_seconds=self.lock_wait_seconds)


class S3Storage(Storage):
    """`AUDIENCE_BUCKET` with `AUDIENCE_KMS_KEY_ID` (or any S3-compatible endpoint via `AWS_ENDPOINT_URL`)."""

    bucket: str
    kms_key_id: str
    prefix: str = ""
    region_name: str | None = None
    endpoint_url: str | None = None
    _store: S3Store | None = PrivateAttr(default=None)

    def store(self) -> S3Store:
        if self._store is None:  # one boto3 client per resource instance
            self._store = S3Store(
                self.bucket,
                self.kms_key_id,
                prefix=self.prefix,
                region_name=self.region_name,
                endpoint_url=self.endpoint_url,
                lock_wait_seconds=self.lock_wait_seconds,
            )
        return self._store
