"""The encrypted evidence store: reference photos, snapshots and other small files.

Each file is an envelope (``audit/envelope.py``): its own AES-256-GCM data key wrapped by
the current master key from configuration. The storage key names the kind and the
envelope's file id, which is checked on every read, so a file swapped for another on disk
is refused.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

from audit.envelope import EnvelopeReader, MasterKeyring, decrypt_bytes, encrypt_bytes
from vbank.config import Settings

logger = logging.getLogger(__name__)

KEY_RE = re.compile(r"^(?P<kind>[a-z][a-z0-9_-]{0,31})/(?P<id>[0-9a-f]{32})$")


class EvidenceNotFound(LookupError):
    """No evidence under that storage key."""


def keyring_from_settings(settings: Settings) -> MasterKeyring:
    if not settings.master_keys:
        raise ValueError("no master key configured (VBANK_MASTER_KEY)")
    return MasterKeyring(dict(settings.master_keys), current=settings.master_keys[0][0])


class EvidenceStore:
    """Files under ``<data dir>/evidence/<kind>/<file id>.venv``, encrypted at rest."""

    def __init__(self, root: Path, keyring: MasterKeyring) -> None:
        self.root = root
        self.keyring = keyring

    @classmethod
    def from_settings(cls, settings: Settings) -> EvidenceStore:
        return cls(settings.data_dir / "evidence", keyring_from_settings(settings))

    def _path(self, key: str) -> tuple[Path, bytes]:
        m = KEY_RE.match(key)
        if m is None:
            raise EvidenceNotFound(key)
        return self.root / m["kind"] / f"{m['id']}.venv", bytes.fromhex(m["id"])

    def put(self, data: bytes, *, kind: str) -> str:
        """Encrypt and store ``data``; returns the storage key."""
        file_id = secrets.token_bytes(16)
        key = f"{kind}/{file_id.hex()}"
        path, _ = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = encrypt_bytes(data, self.keyring, file_id=file_id)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(blob)
        tmp.replace(path)
        return key

    def get(self, key: str) -> bytes:
        """Decrypt a stored file; raises EvidenceNotFound or an EnvelopeError."""
        path, file_id = self._path(key)
        if not path.exists():
            raise EvidenceNotFound(key)
        return decrypt_bytes(path.read_bytes(), self.keyring, expected_file_id=file_id)

    def open(self, key: str) -> EnvelopeReader:
        """A reader for range access (large files); the caller closes it."""
        path, file_id = self._path(key)
        if not path.exists():
            raise EvidenceNotFound(key)
        return EnvelopeReader(path, self.keyring, expected_file_id=file_id)
