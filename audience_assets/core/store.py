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
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlencode

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from audience_assets.core.locks import S3Lease, file_lock
from audience_assets.core.policies import LOCK_WAIT_SECONDS
from audience_assets.core.processes import alive
from audience_assets.core.scratch import scratch

MULTIPART_THRESHOLD = 64 * 1024 * 1024
PARTIAL = ".aa-tmp-"  # a write in progress (`LocalStore`): never listed, swept once its writer is gone


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

    def version(self, key: str) -> str | None:
        """The object's `StoredObject.version` now, or None when there is none."""
        ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str) -> str: ...

    def lock(self, name: str, owner: str = "") -> contextlib.AbstractContextManager[None]:
        """One writer at a time for `name` (a source, an audience) across every process (`core.locks`)."""
        ...

    def sweep_partials(self) -> int:
        """Remove what writes of dead processes left half-done; returns how many."""
        ...


class LocalStore:
    """A folder on this machine (`AUDIENCE_DATA_DIR`) laid out like the bucket. Writes are atomic.

    Keys are joined to the folder as written, never resolved through links: a symbolic link in the landing zone
    is read through (its file is the delivery) but deleting it removes the link, never its target, and a
    linked folder (`landing/` mounted from an SFTP drop) is walked like any other (each folder once, so a link
    loop ends). A write goes to a partial file beside its target (`.aa-tmp-<pid>-...`) and is renamed into
    place; a failed write removes its partial file, and `sweep_partials` removes those of dead processes."""

    content_addressed = False  # `version` is size and mtime

    def __init__(
        self, root: Path | str, tags: Mapping[str, str] | None = None, *, lock_wait_seconds: float = LOCK_WAIT_SECONDS
    ):
        self.root = Path(root).resolve()
        self.tags = dict(tags or {})  # kept for parity with S3; a folder has no object tags
        self.lock_wait_seconds = lock_wait_seconds

    def tagged(self, **tags: str) -> LocalStore:
        return LocalStore(self.root, {**self.tags, **tags}, lock_wait_seconds=self.lock_wait_seconds)

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if key.startswith("/") or ".." in parts:
            raise ValueError(f"key {key!r} escapes the data directory")
        return self.root.joinpath(*parts)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        found, walked = [], set()
        for folder, folders, names in os.walk(base, followlinks=True):
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in walked:  # a link back up the tree
                folders[:] = []
                continue
            walked.add((info.st_dev, info.st_ino))
            folders[:] = [f for f in folders if not f.startswith(".aa-")]  # the store's own (locks)
            for name in names:
                if name.startswith(PARTIAL):
                    continue
                path = Path(folder) / name
                try:
                    stat = path.stat()  # through a link, its file
                except OSError:  # a link to nothing
                    continue
                if not S_ISREG(stat.st_mode):
                    continue
                # ctime too: a file moved or copied in with its old mtime preserved has still just arrived
                arrived = max(stat.st_mtime, stat.st_ctime)
                found.append(
                    StoredObject(
                        path.relative_to(self.root).as_posix(),
                        stat.st_size,
                        dt.datetime.fromtimestamp(arrived, dt.UTC),
                        f"{stat.st_size:x}-{stat.st_mtime_ns:x}",
                    )
                )
        yield from sorted(found, key=lambda o: o.key)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no object {key!r} under {self.root}")
        yield path

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f"{PARTIAL}{os.getpid()}-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                fill(handle)
            os.replace(partial, target)
        except BaseException:  # a full disk, a kill: nothing half-written stays behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise

    def upload(self, path: Path, key: str) -> None:
        with open(path, "rb") as source:
            self._write(key, lambda handle: shutil.copyfileobj(source, handle, 1 << 20))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda handle: handle.write(data))

    def get_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def version(self, key: str) -> str | None:
        try:
            stat = self._path(key).stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_size:x}-{stat.st_mtime_ns:x}"

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)  # a link goes as the link

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def lock(self, name: str, owner: str = "") -> contextlib.AbstractContextManager[None]:
        return file_lock(
            self.root / ".aa-locks" / f"{name}.lock", name, wait_seconds=self.lock_wait_seconds, owner=owner
        )

    def sweep_partials(self, skip: tuple[str, ...] = ("landing",)) -> int:
        """Remove partial files that processes which no longer run left behind (a write killed half-way, or a
        full disk before this version cleaned up after itself); returns how many. `skip`: top-level folders
        the store never writes to (the landing zone may be a large mounted drop)."""
        removed = 0
        for folder, folders, names in os.walk(self.root):
            if Path(folder) == self.root:
                folders[:] = [f for f in folders if f not in skip and not f.startswith(".aa-")]
            for name in names:
                if name.startswith(PARTIAL) and not _writer_alive(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(Path(folder) / name)
                        removed += 1
        return removed


def _writer_alive(name: str) -> bool:
    """Whether the process that is writing this partial file still runs (names carry its pid)."""
    pid = name[len(PARTIAL) :].split("-", 1)[0]
    return pid.isdigit() and alive(int(pid))


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
        lock_wait_seconds: float = LOCK_WAIT_SECONDS,
    ):
        self.bucket, self.kms_key_id, self.prefix = bucket, kms_key_id, prefix
        self.region_name, self.endpoint_url = region_name, endpoint_url
        self.tags = dict(tags or {})
        self._client = client
        self.lock_wait_seconds = lock_wait_seconds

    def tagged(self, **tags: str) -> S3Store:
        return S3Store(
            self.bucket,
            self.kms_key_id,
            prefix=self.prefix,
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            tags={**self.tags, **tags},
            client=self._client,
            lock_wait_seconds=self.lock_wait_seconds,
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

    def version(self, key: str) -> str | None:
        try:
            return self.client().head_object(Bucket=self.bucket, Key=self._key(key))["ETag"].strip('"')
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def delete(self, key: str) -> None:
        self.client().delete_object(Bucket=self.bucket, Key=self._key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def lock(self, name: str, owner: str = "") -> contextlib.AbstractContextManager[None]:
        key = self._key(f"locks/{name}.json")

        def put(body: dict[str, Any], *, if_none_match: bool = False, if_match: str = "") -> str | None:
            condition = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match}
            try:
                answer = self.client().put_object(
                    Bucket=self.bucket, Key=key, Body=json.dumps(body).encode(), **self._extra(), **condition
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return None
                raise
            return answer["ETag"]

        def get() -> tuple[dict[str, Any], str] | None:
            try:
                answer = self.client().get_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if self._missing(error):
                    return None
                raise
            return json.loads(answer["Body"].read() or b"{}"), answer["ETag"]

        def delete(etag: str) -> None:
            self.client().delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)

        return S3Lease(name, put, get, delete).held(wait_seconds=self.lock_wait_seconds, owner=owner)

    def sweep_partials(self) -> int:
        """Nothing to sweep: S3 shows an object only once written whole (an interrupted multipart upload is
        aborted by the bucket's lifecycle rule, `deploy/`)."""
        return 0


@contextlib.contextmanager
def optional_copy(store: Store, key: str) -> Iterator[Path | None]:
    """A local copy of `key`, or None when it does not exist yet."""
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(store.local_copy(key))
        except FileNotFoundError:
            path = None
        yield path
