"""Signing secrets at rest: each is an envelope under the master keyring, so a copy of
the database alone does not let anyone forge our webhooks."""

from __future__ import annotations

from collections.abc import Iterable

from audit.envelope import MasterKeyring, decrypt_bytes, encrypt_bytes
from vbank.webhooks.signing import secret_bytes


def seal(secret: str, keyring: MasterKeyring) -> bytes:
    return encrypt_bytes(secret_bytes(secret), keyring)


def unseal(sealed: bytes, keyring: MasterKeyring) -> bytes:
    """The HMAC key bytes of a sealed secret."""
    return decrypt_bytes(sealed, keyring)


def unseal_all(sealed: Iterable[bytes], keyring: MasterKeyring) -> list[bytes]:
    return [unseal(s, keyring) for s in sealed]
