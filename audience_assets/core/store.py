"""Object storage with one interface and one key layout (`layout`), on the local filesystem or on S3 (SSE-KMS).

Keys are POSIX paths relative to the store's root: `landing/partners/<partner>/<file>`, `staging/...`,
`clean_room/...`, `audiences/...`, `meta/...`. DuckDB never reads `s3://` (its httpfs extension would
download at run time): `local_copy` streams an object to a temporary file, and `upload` sends a local
file back, multipart for large files, encrypted with the configured KMS key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from audience_assets.core.scratch import scratch

MULTIPART_THRESHOLD = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    last_modified: dt.datetime
    version: str  # the S3 ETag, or size and mtime locally: changes whenever the content may have


class Store(Protocol):
    """What the engines need of a store; `LocalStore` and `S3Store` are the two there are."""

    # whether an object's `version` is a digest of its content (S3's ETag), or changes with its metadata too
    content_addressed: bool

    def tagged(self, **tags: str) -> Store:
        """This store, writing every object with `tags` too (the tenant, for cost allocation on S3)."""
        ...

    def list(self, prefix: str) -> Iterator[StoredObject]: ...

    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """The object as a local file for DuckDB (a temporary download on S3), for the `with` block;
        FileNotFoundError when there is none."""
        ...

    def upload(self, path: Path, key: str) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str) -> str: ...


class LocalStore:
    """A folder on this machine (`AUDIENCE_DATA_DIR`) laid out like the bucket. Writes are atomic."""

    content_addressed = False  # `version` is size and mtime

    def __init__(self, root: Path | str, tags: Mapping[str, str] | None = None):
        self.root = Path(root).resolve()
        self.tags = dict(tags or {})  # kept for parity with S3; a folder has no object tags

    def tagged(self, **tags: str) -> LocalStore:
        return LocalStore(self.root, {**self.tags, **tags})

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"key {key!r} escapes the data directory")
        return path

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".aa-tmp-"):
                stat = path.stat()
                # ctime too: a file moved or copied in with its old mtime preserved has still just arrived
                arrived = max(stat.st_mtime, stat.st_ctime)
                yield StoredObject(
                    path.relative_to(self.root).as_posix(),
                    stat.st_size,
                    dt.datetime.fromtimestamp(arrived, dt.UTC),
                    f"{stat.st_size:x}-{stat.st_mtime_ns:x}",
                )

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no object {key!r} under {self.root}")
        yield path

    def upload(self, path: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".aa-tmp-", dir=target.parent)
        os.close(fd)
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".aa-tmp-", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)

    def get_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


class S3Store:
    """`AUDIENCE_BUCKET` on S3 (or any S3-compatible endpoint via `AWS_ENDPOINT_URL`).

    Every write carries `ServerSideEncryption=aws:kms` with `AUDIENCE_KMS_KEY_ID`; a write without a
    key is refused rather than left to the bucket default. `tags` go on every object written.
    """

    content_addressed = True  # `version` is the ETag S3 computes from the bytes

    def __init__(
        self,
        bucket: str,
        kms_key_id: str,
        *,
        prefix: str = "",
        region_name: str | None = None,
        endpoint_url: str | None = None,
        tags: Mapping[str, str] | None = None,
        client: Any = None,
    ):
        self.bucket, self.kms_key_id, self.prefix = bucket, kms_key_id, prefix
        self.region_name, self.endpoint_url = region_name, endpoint_url
        self.tags = dict(tags or {})
        self._client = client

    def tagged(self, **tags: str) -> S3Store:
        return S3Store(
            self.bucket,
            self.kms_key_id,
            prefix=self.prefix,
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            tags={**self.tags, **tags},
            client=self._client,
        )

    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "s3",
                region_name=self.region_name,
                endpoint_url=self.endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60),
            )
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def _extra(self) -> dict[str, str]:
        if not self.kms_key_id:
            raise ValueError("AUDIENCE_KMS_KEY_ID is not set: every object must be written with SSE-KMS")
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        if self.tags:
            extra["Tagging"] = urlencode(self.tags)
        return extra

    @staticmethod
    def _missing(error: ClientError) -> bool:
        return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey")

    def list(self, prefix: str) -> Iterator[StoredObject]:
        strip = len(self._key(""))
        for page in (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        ):
            for item in page.get("Contents", []):
                yield StoredObject(item["Key"][strip:], item["Size"], item["LastModified"], item["ETag"].strip('"'))

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with scratch("s3") as folder:
            path = folder / Path(key).name
            try:
                self.client().download_file(self.bucket, self._key(key), str(path))
            except ClientError as error:
                if self._missing(error):
                    raise FileNotFoundError(f"no object s3://{self.bucket}/{self._key(key)}") from None
                raise
            yield path

    def upload(self, path: Path, key: str) -> None:
        self.client().upload_file(
            str(path),
            self.bucket,
            self._key(key),
            ExtraArgs=self._extra(),
            Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD),
        )

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **self._extra())

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client().get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as error:
            if self._missing(error):
                return None
            raise

    def delete(self, key: str) -> None:
        self.client().delete_object(Bucket=self.bucket, Key=self._key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


@contextlib.contextmanager
def optional_copy(store: Store, key: str) -> Iterator[Path | None]:
    """A local copy of `key`, or None when it does not exist yet."""
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(store.local_copy(key))
        except FileNotFoundError:
            path = None
        yield path
