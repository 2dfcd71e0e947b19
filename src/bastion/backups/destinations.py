"""Where backups go: local directories and S3-compatible object storage.

Every destination holds plain names (``bastion-….tar.zst.age``, its
``.manifest`` sidecar, the erasure ledger) side by side: no index to keep in
step. A backup is written to the first destination (the ``[backups] dir``)
and copied to the others; each copy is uploaded under ``<name>.partial`` (a
directory) or in one PUT (S3 makes an object visible only once complete)
and its sidecar last, so a reader never takes a half-copied backup for one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import urlsplit

from bastion.backups.errors import BackupUnavailable

if TYPE_CHECKING:
    from bastion.settings import Settings

__all__ = [
    "Destination",
    "LocalDestination",
    "S3Destination",
    "destination_for",
    "destinations_of",
    "local_backup_dir",
]

_PARTIAL = ".partial"


class Destination(Protocol):
    """A place that holds backup files by name."""

    @property
    def name(self) -> str:
        """How the operator wrote it (a directory, ``s3://bucket/prefix``)."""

    def list_names(self) -> list[str]:
        """Every file name held (not only backups)."""

    def put(self, local_path: Path, name: str) -> None:
        """Copy a local file in as ``name``, replacing it; visible only once complete."""

    def get(self, name: str, local_path: Path) -> None:
        """Copy ``name`` out to a new local file; BackupUnavailable if it is not there."""

    def delete(self, name: str) -> None:
        """Remove ``name``; nothing if it is not there."""

    def read_bytes(self, name: str) -> bytes | None:
        """The content of a small file (a sidecar, the ledger), or None if absent."""

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` atomically."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalDestination:
    """A directory (made 0700 when missing); writes go to ``<name>.partial`` and are renamed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = str(directory)

    @property
    def path(self) -> Path:
        return self.directory

    def _ensure(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BackupUnavailable(f"{self.directory}: cannot be created ({exc.strerror})") from None

    def _file(self, name: str) -> Path:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a file name: {name!r}")
        return self.directory / name

    def list_names(self) -> list[str]:
        try:
            return sorted(entry.name for entry in os.scandir(self.directory) if entry.is_file(follow_symlinks=False))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackupUnavailable(f"{self.directory}: cannot be read ({exc.strerror})") from None

    def put(self, local_path: Path, name: str) -> None:
        if local_path.resolve() == self._file(name).resolve():
            return
        try:
            source = local_path.open("rb")
        except OSError as exc:
            raise BackupUnavailable(f"{local_path}: cannot be read ({exc.strerror})") from None
        with source:
            self._write(name, lambda copy: shutil.copyfileobj(source, copy, 1 << 20))

    def get(self, name: str, local_path: Path) -> None:
        source = self._file(name)
        try:
            file = source.open("rb")
        except FileNotFoundError:
            raise BackupUnavailable(f"{source}: no such file") from None
        except OSError as exc:
            raise BackupUnavailable(f"{source}: cannot be read ({exc.strerror})") from None
        try:
            with file, local_path.open("xb") as copy:
                shutil.copyfileobj(file, copy, 1 << 20)
        except FileExistsError:
            raise  # a local file is never overwritten: the caller's mistake, not the destination's
        except OSError as exc:
            raise BackupUnavailable(f"{source}: cannot copy to {local_path} ({exc.strerror})") from None

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(name).unlink()

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self._file(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackupUnavailable(f"{self.directory}: cannot read {name} ({exc.strerror})") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        self._write(name, lambda file: file.write(data))

    def _write(self, name: str, fill: Callable[[BinaryIO], object]) -> None:
        """Write ``name`` whole or not at all: a 0600 partial file, fsynced, renamed into place."""
        self._ensure()
        target = self._file(name)
        partial = target.with_name(name + _PARTIAL)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as file:
                fill(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
            _fsync_dir(self.directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise BackupUnavailable(f"{self.directory}: cannot write {name} ({exc.strerror})") from None


class S3Destination:
    """``s3://bucket/prefix`` on any S3-compatible store (boto3; ``[backups] s3_*`` for the endpoint,
    region and credentials, else boto3's own chain: environment, instance role).

    boto3 is blocking: callers run these methods in a thread. An upload is
    one PUT or a multipart upload, visible only once complete; the sidecar
    is uploaded after the file, so a listing never shows a half-uploaded
    backup as complete.
    """

    def __init__(self, url: str, settings: Settings) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise BackupUnavailable(f"{url}: not an s3://bucket/prefix destination")
        self.name = url
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self._settings = settings.backups
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            secret = self._settings.s3_secret_access_key
            self._client = boto3.client(
                "s3",
                endpoint_url=self._settings.s3_endpoint_url,
                region_name=self._settings.s3_region,
                aws_access_key_id=self._settings.s3_access_key_id,
                aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60),
            )
        return self._client

    def _key(self, name: str) -> str:
        if "/" in name or not name:
            raise ValueError(f"not a file name: {name!r}")
        return self.prefix + name

    def _failed(self, what: str, exc: Exception) -> BackupUnavailable:
        detail = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        if "NoSuchBucket" in str(exc):
            detail = "NoSuchBucket"
        return BackupUnavailable(f"{self.name}: cannot {what} ({detail})")

    def list_names(self) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        names: list[str] = []
        try:
            pages = (
                self._s3()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
            )
            for page in pages:
                names.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("list", exc) from None
        return sorted(name for name in names if name and "/" not in name)

    def put(self, local_path: Path, name: str) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3().upload_file(str(local_path), self.bucket, self._key(name))
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise self._failed(f"upload {name}", exc) from None

    def get(self, name: str, local_path: Path) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3().download_file(self.bucket, self._key(name), str(local_path))
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            with contextlib.suppress(FileNotFoundError):
                local_path.unlink()
            raise self._failed(f"download {name}", exc) from None

    def delete(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3().delete_object(Bucket=self.bucket, Key=self._key(name))
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(f"delete {name}", exc) from None

    def read_bytes(self, name: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body: bytes = self._s3().get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._failed(f"read {name}", exc) from None
        except BotoCoreError as exc:
            raise self._failed(f"read {name}", exc) from None
        return body

    def write_bytes(self, name: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3().put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(f"write {name}", exc) from None

    def read_tagged(self, name: str) -> tuple[bytes | None, str | None]:
        """The object's bytes and ETag, (None, None) when there is none: for :meth:`write_if`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = self._s3().get_object(Bucket=self.bucket, Key=self._key(name))
            body: bytes = found["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise self._failed(f"read {name}", exc) from None
        except BotoCoreError as exc:
            raise self._failed(f"read {name}", exc) from None
        return body, str(found["ETag"])

    def write_if(self, name: str, data: bytes, etag: str | None) -> bool:
        """Write ``data`` only if the object is still the one read with ``etag`` (a conditional PUT,
        ``If-Match``; ``If-None-Match: *`` when there was none); False when another writer came first."""
        from botocore.exceptions import BotoCoreError, ClientError

        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self._s3().put_object(Bucket=self.bucket, Key=self._key(name), Body=data, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
                "412",
                "409",
            ):
                return False
            raise self._failed(f"write {name}", exc) from None
        except BotoCoreError as exc:
            raise self._failed(f"write {name}", exc) from None
        return True


def local_backup_dir(settings: Settings) -> Path:
    """``[backups] dir`` (a relative one under the data directory), by default ``<data dir>/backups``."""
    configured = settings.backups.dir
    if configured is None:
        return settings.data_dir / "backups"
    return configured if configured.is_absolute() else settings.data_dir / configured


def destination_for(text: str, settings: Settings, *, base: Path | None = None) -> Destination:
    """The destination an operator wrote: ``s3://bucket/prefix`` or a directory (relative to
    ``base``: the data directory for ``[backups] destinations``, else the working directory)."""
    if text.startswith("s3://"):
        return S3Destination(text, settings)
    if "://" in text:
        raise BackupUnavailable(f"{text}: a destination is a directory or s3://bucket/prefix")
    path = Path(text).expanduser()
    return LocalDestination(path if path.is_absolute() else (base or Path.cwd()) / path)


def destinations_of(settings: Settings) -> list[Destination]:
    """Every configured destination: the ``[backups] dir`` first, then ``[backups] destinations``."""
    found: list[Destination] = [LocalDestination(local_backup_dir(settings))]
    found.extend(destination_for(text, settings, base=settings.data_dir) for text in settings.backups.destinations)
    return found
