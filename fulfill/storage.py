"""Object storage for briefs: a local directory by default, an S3 bucket through prefect-aws.

Keys are deterministic per intent step, so a repeated PUT overwrites the same object
(idempotent by construction) and a DELETE of a missing object is not an error.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol


class ObjectStore(Protocol):
    """The four operations briefs need."""

    kind: str

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write (or overwrite) an object."""

    def get(self, key: str) -> bytes | None:
        """Read an object, or ``None`` if absent."""

    def delete(self, key: str) -> None:
        """Remove an object; absent is fine."""

    def url(self, key: str) -> str:
        """Where a person can find it."""


class LocalObjectStore:
    """Objects as files under ``root`` (atomic rename, so readers never see half a file)."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError("object key escapes the storage root")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes | None:
        """Read or ``None``."""
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def delete(self, key: str) -> None:
        """Remove if present."""
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        """A file URL."""
        return self._path(key).as_uri()


class S3ObjectStore:
    """Objects in an S3 bucket, through a boto3 client (from a prefect-aws ``S3Bucket`` block)."""

    kind = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @classmethod
    def from_block(cls, block: Any) -> S3ObjectStore:
        """Build from a loaded ``prefect_aws.S3Bucket`` block."""
        return cls(block.credentials.get_s3_client(), block.bucket_name, block.bucket_folder or "")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """PUT is idempotent for the same key and bytes."""
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes | None:
        """Read or ``None``."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        return response["Body"].read()  # type: ignore[no-any-return]

    def delete(self, key: str) -> None:
        """DELETE of an absent key succeeds in S3."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def url(self, key: str) -> str:
        """An s3:// URL."""
        return f"s3://{self.bucket}/{self._key(key)}"
