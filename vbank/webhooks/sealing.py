"""Signing secrets at rest: each is an envelope under the master keyring, so a copy of
the database alone does not let anyone forge our webhooks."""

from __future__ import annotations

from collections.abc import Iterable

from audit.envelope import (
    HEADER_SIZE,
    EnvelopeHeader,
    MasterKeyring,
    decrypt_bytes,
    encrypt_bytes,
    rewrap_header,
)
from vbank.webhooks.signing import secret_bytes


def seal(secret: str, keyring: MasterKeyring) -> bytes:
    return encrypt_bytes(secret_bytes(secret), keyring)


def unseal(sealed: bytes, keyring: MasterKeyring) -> bytes:
    """The HMAC key bytes of a sealed secret."""
    return decrypt_bytes(sealed, keyring)


def unseal_all(sealed: Iterable[bytes], keyring: MasterKeyring) -> list[bytes]:
    return [unseal(s, keyring) for s in sealed]


def rewrap(sealed: bytes, keyring: MasterKeyring) -> bytes | None:
    """The same secret with its data key wrapped by the current master key, or None when
    it already is (a master-key rotation re-wraps headers only, like recordings)."""
    header = EnvelopeHeader.from_bytes(sealed[:HEADER_SIZE])
    if header.master_key_id == keyring.current_id:
        return None
    return rewrap_header(header, keyring) + sealed[HEADER_SIZE:]
