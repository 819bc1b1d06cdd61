"""Files sealed at rest: finished recordings into envelopes, and master-key rotation.

Why: the media layer writes recordings as plaintext while a call runs (a container
muxer needs a seekable file); once a recording is final it is sealed into an envelope
(``audit/envelope.py``) with a fresh file id and the plaintext is deleted. The file id
and the plaintext SHA-256 go into the ``recording.finalised`` audit event, so a swapped
or edited file is refused on read and its hash can be checked against the signed log.
The temporary ciphertext is written outside the recording's directory and renamed into
place, so a listing never sees a half-written envelope.

Rotating the master key re-wraps data keys only (``rewrap_all``): each file's 129-byte
header is rewritten, recordings are never re-encrypted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from audit.envelope import (
    EnvelopeError,
    EnvelopeReader,
    EnvelopeWriter,
    MasterKeyring,
    fsync_dir,
    read_header,
    rewrap_file,
)

__all__ = ["RewrapReport", "SealedFile", "rewrap_all", "seal_file", "sealed_files", "unseal_to"]

logger = logging.getLogger(__name__)

SUFFIX = ".venv"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SealedFile:
    """A sealed recording: where, its file id, and the plaintext's SHA-256 and size."""

    path: Path
    file_id: bytes
    sha256: str
    size: int
    master_key_id: str


def seal_file(plain: Path, keyring: MasterKeyring, *, tmp_dir: Path | None = None) -> SealedFile:
    """Encrypt ``plain`` into ``plain.venv`` (fsynced, renamed into place), then delete it."""
    dest = plain.with_name(plain.name + SUFFIX)
    tmp_dir = tmp_dir or plain.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    file_id = secrets.token_bytes(16)
    tmp = tmp_dir / f".{dest.name}.{secrets.token_hex(6)}.part"
    try:
        with open(tmp, "xb") as fh:
            writer = EnvelopeWriter(fh, keyring, file_id=file_id)
            with open(plain, "rb") as src:
                while chunk := src.read(_CHUNK):
                    writer.write(chunk)
            info = writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)
    plain.unlink()
    return SealedFile(dest, file_id, info.sha256_hex, info.size, info.master_key_id)


def unseal_to(sealed: Path, keyring: MasterKeyring, file_id: bytes, dest: Path) -> tuple[str, int]:
    """Decrypt a sealed file into ``dest``; returns the plaintext SHA-256 and size.

    Raises :class:`~audit.envelope.EnvelopeError` for a wrong key, a wrong file id or a
    damaged or cut ciphertext; ``dest`` is then removed.
    """
    digest, size = hashlib.sha256(), 0
    try:
        with (
            EnvelopeReader(sealed, keyring, expected_file_id=file_id) as reader,
            open(dest, "wb") as out,
        ):
            for chunk in reader.iter_chunks():
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


def sealed_files(data_dir: Path) -> Iterator[Path]:
    """Every envelope under the data directory (recordings and evidence)."""
    for sub in ("recordings", "evidence"):
        root = data_dir / sub
        if root.is_dir():
            yield from sorted(p for p in root.rglob(f"*{SUFFIX}") if p.is_file())


@dataclass(frozen=True)
class RewrapReport:
    """Counts of a master-key rotation; ``failed`` lists paths relative to the data dir."""

    rewrapped: int
    current: int
    failed: tuple[str, ...]


def rewrap_all(data_dir: Path, keyring: MasterKeyring) -> RewrapReport:
    """Re-wrap every envelope's data key with the keyring's current master key."""
    rewrapped = current = 0
    failed: list[str] = []
    for path in sealed_files(data_dir):
        try:
            with open(path, "rb") as fh:
                on_current = read_header(fh).master_key_id == keyring.current_id
            if not on_current:
                rewrap_file(path, keyring)
        except (EnvelopeError, OSError) as exc:
            rel = path.relative_to(data_dir).as_posix()
            logger.error("cannot re-wrap %s: %s", rel, type(exc).__name__)
            failed.append(rel)
            continue
        if on_current:
            current += 1
        else:
            rewrapped += 1
    logger.info("master key rotation: %d re-wrapped, %d already current", rewrapped, current)
    return RewrapReport(rewrapped, current, tuple(failed))
