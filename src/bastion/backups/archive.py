"""The backup file: a tar, compressed with zstd, encrypted with age; written and read as streams.

Writing: ``tar (w|) → zstd → age → <name>.partial``. tarfile and zstd push
bytes, pyrage's ``encrypt_io`` pulls them (it calls ``read(8192)`` on its
source), so a thread writes the tar and zstd into a pipe whose other end
pyrage reads, and the encrypted bytes are hashed on their way to the file.
Nothing holds more than a few pipe buffers: measured with a 200 MB file,
pyrage's ``encrypt_io`` and ``decrypt_io`` peak at ~11 MB resident, the
interpreter's own 10 MB included (they stream in age's 64 KiB chunks).

Reading is the same in reverse: a thread decrypts into a zstd decompressor
writing into a pipe; this thread reads the tar from it (``r|``: no seeking)
and refuses, before writing a byte of a member:

- anything but regular files (links, devices, directories are implied),
  absolute paths, ``..``, paths outside the known parts;
- ``manifest.json`` and ``manifest.sig`` not first, or a signature that no
  trusted notary key made;
- a member the manifest does not list, listed twice, or of another size;

and after it: a member whose SHA-256 differs, a part missing, or an age
stream that does not end where it should (truncation, a flipped byte: age
authenticates every 64 KiB chunk and the last one). Every failure is one
:class:`BackupInvalid` line; the caller removes ``into``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, BinaryIO

import zstandard

from bastion.backups.errors import BackupInvalid, BackupUnavailable
from bastion.backups.manifest import (
    MAX_MANIFEST_BYTES,
    SIDECAR_SUFFIX,
    Manifest,
    Part,
    backup_id_of,
    check_sidecar,
    created_at_of,
    parse_sidecar,
    verify_manifest_note,
    verify_sidecar,
)
from bastion.security import StreamDigest
from bastion.security.age import AgeError, decrypt_stream, encrypt_stream

if TYPE_CHECKING:
    import datetime as dt

    from bastion.backups.destinations import Destination

__all__ = [
    "MANIFEST_JSON",
    "MANIFEST_SIG",
    "BackupInfo",
    "Progress",
    "extract",
    "list_backups",
    "write_archive",
]

MANIFEST_JSON = "manifest.json"
MANIFEST_SIG = "manifest.sig"
PARTIAL_SUFFIX = ".partial"
# The only paths a part may have: the database, the keystore, the configuration,
# the TLS files, the admin CA's public files, the erasure ledger.
_PART_RE = re.compile(
    r"bastion\.db|database\.dump|bastion\.toml|erasure-ledger\.jsonl|(keys|tls|ca)/[A-Za-z0-9._-]{1,128}"
)
_CHUNK = 1 << 20
# zstd level 3: the library default, ~300 MB/s on one core here; higher levels
# cost more CPU than the encryption and the disk together.
_ZSTD_LEVEL = 3

Progress = Callable[[int], None]
"""Called with the number of bytes just processed (of the parts when writing, of the file when reading)."""


# --- writing -------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes to ``target``."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.digest = StreamDigest()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self.digest.update(chunk)
        self.target.write(chunk)
        return len(chunk)


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(mtime)
    info.uname = info.gname = ""
    return info


def _write_tar(
    sink: IO[bytes],
    manifest_json: bytes,
    manifest_sig: bytes,
    parts: Sequence[tuple[str, Path]],
    *,
    mtime: float,
    progress: Progress | None,
) -> None:
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    with (
        compressor.stream_writer(sink, closefd=False) as compressed,
        tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in ((MANIFEST_JSON, manifest_json), (MANIFEST_SIG, manifest_sig)):
            tar.addfile(_tar_info(name, len(data), mtime), io.BytesIO(data))
        for name, path in parts:
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                tar.addfile(_tar_info(name, size, mtime), _Counting(file, progress))


class _Counting(io.RawIOBase):
    """A readable file that reports each read to ``progress``."""

    def __init__(self, source: BinaryIO, progress: Progress | None) -> None:
        self.source = source
        self.progress = progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        if self.progress is not None and chunk:
            self.progress(len(chunk))
        return chunk


def write_archive(
    target: Path,
    manifest_json: bytes,
    manifest_sig: bytes,
    parts: Sequence[tuple[str, Path]],
    recipients: list[str],
    *,
    mtime: float,
    progress: Progress | None = None,
) -> Part:
    """Write the encrypted archive to ``target`` (a new file, 0600, fsynced); its size and SHA-256.

    ``parts`` are (archive path, file) pairs, in order; the files must not
    change while they are written (the caller stages copies).
    """
    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_end, "wb") as sink:
                _write_tar(sink, manifest_json, manifest_sig, parts, mtime=mtime, progress=progress)
        except BaseException as exc:  # noqa: BLE001 (re-raised by the caller's thread below)
            failure.append(exc)

    producer = threading.Thread(target=produce, name="backup-tar", daemon=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        hashing = _HashingWriter(file)
        producer.start()
        try:
            with os.fdopen(read_end, "rb") as source:
                encrypt_stream(source, hashing, recipients)  # type: ignore[arg-type]
        finally:
            producer.join()
        if failure:
            raise failure[0]
        file.flush()
        os.fsync(file.fileno())
    return Part(hashing.digest.size, hashing.digest.hexdigest())


# --- reading -------------------------------------------------------------------


def _member_path(member: tarfile.TarInfo) -> str:
    """The member's name if it is a regular file at a known part's path; else BackupInvalid."""
    name = member.name
    pure = PurePosixPath(name)
    if not member.isreg() or pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BackupInvalid(f"the archive holds {name!r}, which is not a plain relative file")
    if name not in (MANIFEST_JSON, MANIFEST_SIG) and not _PART_RE.fullmatch(name):
        raise BackupInvalid(f"the archive holds {name!r}, which no backup has")
    return name


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > MAX_MANIFEST_BYTES:
        raise BackupInvalid(f"{member.name} is too large")
    source = tar.extractfile(member)
    if source is None:
        raise BackupInvalid(f"{member.name} cannot be read")
    return source.read()


def _next(members: Iterator[tarfile.TarInfo], expected: str) -> tarfile.TarInfo:
    member = next(members, None)
    if member is None or _member_path(member) != expected:
        raise BackupInvalid(f"the archive does not begin with {MANIFEST_JSON} and {MANIFEST_SIG}")
    return member


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path, expected: Part) -> None:
    """Write one part under ``into``, hashing it; BackupInvalid if it differs from the manifest."""
    if member.size != expected.size:
        raise BackupInvalid(f"{member.name}: {member.size} bytes, the manifest says {expected.size}")
    target = into / member.name
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:
        raise BackupInvalid(f"{member.name} cannot be read")
    hashed = StreamDigest()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        while chunk := source.read(_CHUNK):
            hashed.update(chunk)
            file.write(chunk)
        file.flush()
        os.fsync(file.fileno())
    if hashed.size != expected.size or hashed.hexdigest() != expected.sha256:
        raise BackupInvalid(f"{member.name}: its SHA-256 differs from the signed manifest's")


def _read_archive(source: IO[bytes], into: Path, vkeys: Sequence[str]) -> Manifest:
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            members = iter(tar)
            manifest_json = _read_small(tar, _next(members, MANIFEST_JSON))
            manifest_sig = _read_small(tar, _next(members, MANIFEST_SIG))
            manifest = verify_manifest_note(manifest_sig, manifest_json, vkeys)
            seen: set[str] = set()
            for member in members:
                name = _member_path(member)
                expected = manifest.parts.get(name)
                if expected is None or name in seen:
                    raise BackupInvalid(f"the archive holds {name!r}, which its manifest does not list")
                seen.add(name)
                _copy_member(tar, member, into, expected)
    except (tarfile.TarError, EOFError, zstandard.ZstdError):
        raise BackupInvalid("the archive is corrupt (tar)") from None
    missing = sorted(set(manifest.parts) - seen)
    if missing:
        raise BackupInvalid(f"the archive lacks {missing[0]}, which its manifest lists")
    # Read to the very end: age authenticates the last chunk only there.
    while source.read(_CHUNK):
        pass
    return manifest


class _PipeSink(io.RawIOBase):
    """The pipe's write end; remembers whether the reader went away (it stopped at a bad member)."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.broken = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return self.target.write(data)
        except BrokenPipeError:
            self.broken = True
            raise


def extract(
    backup_path: Path,
    identity_text: str,
    into: Path,
    keys: Iterable[str],
    progress: Progress | None = None,
    *,
    check_sidecar: bool = True,
    opened: BinaryIO | None = None,
) -> Manifest:
    """Decrypt, decompress and untar ``backup_path`` into the existing directory ``into``, checking
    the manifest's signature against ``keys`` (note verifier keys from outside the backup) and every
    part's size and SHA-256; the manifest, or BackupInvalid (``into`` may then hold a part: remove it).

    When the sidecar lies beside the file (and ``check_sidecar``), it is verified first, signature
    and file hash, and the manifest inside must be the same: nothing is decrypted, decompressed or
    parsed (a tar header can ask for any amount of memory) from a file no trusted key vouched for.
    The file is hashed and decrypted through one open file (``opened``, or opened here once): a
    file renamed over the backup between the two is never the one decrypted.
    """
    vkeys = list(keys)
    if not vkeys:
        raise BackupUnavailable("no trusted notary key to check the manifest's signature with")
    if opened is not None:
        return _extract_from(
            backup_path,
            opened,
            identity_text=identity_text,
            into=into,
            vkeys=vkeys,
            progress=progress,
            check_sidecar=check_sidecar,
        )
    try:
        encrypted = backup_path.open("rb")
    except FileNotFoundError:
        raise BackupUnavailable(f"{backup_path}: no such file") from None
    with encrypted:
        return _extract_from(
            backup_path,
            encrypted,
            identity_text=identity_text,
            into=into,
            vkeys=vkeys,
            progress=progress,
            check_sidecar=check_sidecar,
        )


def _extract_from(
    backup_path: Path,
    encrypted: BinaryIO,
    *,
    identity_text: str,
    into: Path,
    vkeys: list[str],
    progress: Progress | None,
    check_sidecar: bool,
) -> Manifest:
    vouched: Manifest | None = None
    if check_sidecar and backup_path.with_name(backup_path.name + SIDECAR_SUFFIX).exists():
        vouched = verify_sidecar(backup_path, vkeys, opened=encrypted)
    encrypted.seek(0)
    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    pipe = os.fdopen(write_end, "wb", buffering=0)
    sink = _PipeSink(pipe)

    def produce() -> None:
        try:
            with (
                pipe,
                zstandard.ZstdDecompressor().stream_writer(sink, closefd=False) as plain,  # type: ignore[arg-type]
            ):
                decrypt_stream(_Counting(encrypted, progress), plain, identity_text)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 (re-raised by the caller's thread below)
            # A broken pipe means the reader stopped at a bad member: its reason is the one to report.
            if not sink.broken:
                failure.append(exc)

    producer = threading.Thread(target=produce, name="backup-untar", daemon=True)
    producer.start()
    manifest: Manifest | None = None
    invalid: BackupInvalid | None = None
    try:
        with os.fdopen(read_end, "rb") as source:
            manifest = _read_archive(source, into, vkeys)
    except BackupInvalid as exc:
        invalid = exc
    finally:
        producer.join()
    if failure:
        # The decryption's own failure explains a broken stream better than the tar's.
        _raise_decrypt_failure(failure[0], backup_path)
    if invalid is not None:
        raise invalid
    assert manifest is not None  # noqa: S101 (no failure means the archive was read)
    if vouched is not None and manifest != vouched:
        raise BackupInvalid(f"{backup_path.name}: the manifest inside differs from its sidecar")
    return manifest


def _raise_decrypt_failure(exc: BaseException, backup_path: Path) -> None:
    if isinstance(exc, AgeError):
        raise BackupInvalid(f"{backup_path.name}: {exc}") from None
    if isinstance(exc, zstandard.ZstdError):
        raise BackupInvalid(f"{backup_path.name}: the archive is corrupt (zstd)") from None
    if isinstance(exc, FileNotFoundError):
        raise BackupUnavailable(f"{backup_path}: no such file") from None
    raise exc


# --- listing -------------------------------------------------------------------


@dataclass(frozen=True)
class BackupInfo:
    """One backup in a destination. ``complete``: the file and a sidecar that parses, names it and
    gives its size (and, when keys were given, is signed by one of them)."""

    id: str
    name: str
    created_at: dt.datetime
    size: int | None
    complete: bool
    reason: str | None = None


def list_backups(destination: Destination, keys: Iterable[str] | None = None) -> list[BackupInfo]:
    """Every backup (complete or not) in ``destination``, oldest first.

    A ``.partial`` file (a backup being written, or killed while it was) and a
    file without a valid sidecar are listed as incomplete; ``prune`` may
    delete them once older than an hour.
    """
    vkeys = list(keys) if keys is not None else None
    names = destination.list_names()
    present = set(names)
    found: dict[str, BackupInfo] = {}
    for entry in sorted(names):
        name = entry.removesuffix(PARTIAL_SUFFIX).removesuffix(SIDECAR_SUFFIX)
        backup_id, created_at = backup_id_of(name), created_at_of(name)
        if backup_id is None or created_at is None or name in found:
            continue
        if name not in present:
            reason = "being written" if name + PARTIAL_SUFFIX in present else "the backup file is missing"
            found[name] = BackupInfo(backup_id, name, created_at, None, complete=False, reason=reason)
            continue
        found[name] = _info(destination, name, backup_id, created_at, present=present, vkeys=vkeys)
    return sorted(found.values(), key=lambda info: (info.created_at, info.name))


def _info(
    destination: Destination,
    name: str,
    backup_id: str,
    created_at: dt.datetime,
    *,
    present: set[str],
    vkeys: list[str] | None,
) -> BackupInfo:
    def incomplete(reason: str) -> BackupInfo:
        return BackupInfo(backup_id, name, created_at, None, complete=False, reason=reason)

    if name + SIDECAR_SUFFIX not in present:
        return incomplete("no sidecar manifest")
    data = destination.read_bytes(name + SIDECAR_SUFFIX)
    if data is None:
        return incomplete("no sidecar manifest")
    try:
        sidecar = parse_sidecar(data)
        if vkeys is not None:
            check_sidecar(sidecar, vkeys)
    except BackupInvalid as exc:
        return incomplete(str(exc))
    if sidecar.name != name:
        return incomplete("its sidecar names another backup")
    return BackupInfo(backup_id, name, sidecar.manifest.created_at, sidecar.size, complete=True)


def remove_quietly(path: Path) -> None:
    """Unlink ``path`` if it exists (a partial file after a failure)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
