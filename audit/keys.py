"""Named Ed25519 checkpoint keys with validity windows, in C2SP signed-note form.

Why: auditors must be able to verify checkpoints years later holding only
public keys, across key rotations. Each key therefore has a note key name, the
note key ID derived from it, and the UTC window ``[not_before, not_after)`` in
which it may sign. Public keys export as note verifier keys
(``name+hexkeyid+base64(0x01 || pubkey)``), which Go's ``sumdb/note`` and
other C2SP tooling read as-is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "ED25519_SIGNATURE_TYPE",
    "KeyRegistry",
    "KeyRegistryError",
    "SigningKey",
    "VerifierKey",
    "load_signing_key",
    "note_key_id",
    "validate_key_name",
]

logger = logging.getLogger(__name__)

ED25519_SIGNATURE_TYPE = 0x01
_PRIVATE_PREFIX = "PRIVATE+KEY+"


class KeyRegistryError(ValueError):
    """A key, key name, key encoding or validity window is invalid."""


def validate_key_name(name: str) -> None:
    """Enforce signed-note key-name rules: non-empty, no Unicode spaces, no '+'."""
    if not isinstance(name, str) or not name:
        raise KeyRegistryError("key name must be a non-empty string")
    for ch in name:
        if ch == "+" or ch.isspace() or unicodedata.category(ch) in ("Zs", "Zl", "Zp"):
            raise KeyRegistryError(f"key name {name!r} contains a space or '+'")
        if ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF:
            raise KeyRegistryError(f"key name {name!r} contains a control character")


def note_key_id(name: str, public_key: bytes) -> int:
    """Signed-note Ed25519 key ID: SHA-256(name || 0x0A || 0x01 || pubkey)[:4], big-endian."""
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


def _utc(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise KeyRegistryError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _require_utc(value: datetime, what: str) -> datetime:
    result = _utc(value, what)
    if result is None:
        raise KeyRegistryError(f"{what} is required")
    return result


def _check_window(nb: datetime | None, na: datetime | None) -> None:
    if nb is not None and na is not None and na <= nb:
        raise KeyRegistryError("not_after must be later than not_before")


def _in_window(at: datetime, nb: datetime | None, na: datetime | None) -> bool:
    t = _require_utc(at, "time")
    return (nb is None or nb <= t) and (na is None or t < na)


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise KeyRegistryError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise KeyRegistryError(f"{what} is not canonical base64")
    return raw


@dataclass(frozen=True)
class VerifierKey:
    """A public Ed25519 note key plus the window in which it was allowed to sign."""

    name: str
    public_key: bytes
    not_before: datetime | None = None
    not_after: datetime | None = None

    def __post_init__(self) -> None:
        validate_key_name(self.name)
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise KeyRegistryError("Ed25519 public key must be 32 bytes")
        object.__setattr__(self, "not_before", _utc(self.not_before, "not_before"))
        object.__setattr__(self, "not_after", _utc(self.not_after, "not_after"))
        _check_window(self.not_before, self.not_after)

    @property
    def key_id(self) -> int:
        """The 32-bit note key ID."""
        return note_key_id(self.name, self.public_key)

    def valid_at(self, at: datetime) -> bool:
        """Whether ``at`` (aware datetime) lies in ``[not_before, not_after)``."""
        return _in_window(at, self.not_before, self.not_after)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Ed25519-verify ``signature`` over ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def verifier_string(self) -> str:
        """Note verifier key: ``name+<8 hex key id>+base64(0x01 || pubkey)``."""
        blob = base64.b64encode(bytes([ED25519_SIGNATURE_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{blob}"

    @classmethod
    def parse(
        cls,
        vkey: str,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> VerifierKey:
        """Parse a note verifier key string, checking that its key ID matches."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise KeyRegistryError("verifier key must be name+keyid+key")
        name, hex_id, blob = parts
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise KeyRegistryError("verifier key ID must be 8 lowercase hex digits")
        raw = _b64decode(blob, "verifier key")
        if len(raw) != 33 or raw[0] != ED25519_SIGNATURE_TYPE:
            raise KeyRegistryError("verifier key is not an Ed25519 (type 0x01) key")
        key = cls(name, raw[1:], not_before, not_after)
        if key.key_id != int(hex_id, 16):
            raise KeyRegistryError("verifier key ID does not match name and key")
        return key


@dataclass(frozen=True, eq=False)
class SigningKey:
    """An Ed25519 private note key with its signing window. Never logged or repr'd."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)
    not_before: datetime | None = None
    not_after: datetime | None = None

    def __post_init__(self) -> None:
        validate_key_name(self.name)
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise KeyRegistryError("private_key must be an Ed25519PrivateKey")
        object.__setattr__(self, "not_before", _utc(self.not_before, "not_before"))
        object.__setattr__(self, "not_after", _utc(self.not_after, "not_after"))
        _check_window(self.not_before, self.not_after)

    @cached_property
    def public(self) -> VerifierKey:
        """The matching public key, with the same window."""
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return VerifierKey(self.name, raw, self.not_before, self.not_after)

    @property
    def key_id(self) -> int:
        """The 32-bit note key ID."""
        return self.public.key_id

    def valid_at(self, at: datetime) -> bool:
        """Whether this key may sign at ``at``."""
        return _in_window(at, self.not_before, self.not_after)

    def sign(self, message: bytes) -> bytes:
        """Raw 64-byte Ed25519 signature over ``message``."""
        return self.private_key.sign(message)

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM, for key-generation tooling writing to a secret store."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def generate(
        cls,
        name: str,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> SigningKey:
        """A fresh random key."""
        return cls(name, Ed25519PrivateKey.generate(), not_before, not_after)


def load_signing_key(
    name: str,
    material: bytes | str,
    *,
    password: bytes | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> SigningKey:
    """Load a private key from config.

    Accepts PKCS#8 PEM (bytes or text, optionally ``password``-encrypted), a raw
    32-byte Ed25519 seed (bytes), the seed as standard base64 text, or a Go
    ``sumdb/note`` signer key (``PRIVATE+KEY+name+keyid+base64(0x01 || seed)``),
    whose embedded name must equal ``name``.
    """
    if isinstance(material, bytes) and len(material) == 32:
        return SigningKey(
            name, Ed25519PrivateKey.from_private_bytes(material), not_before, not_after
        )
    if isinstance(material, bytes):
        try:
            text = material.decode("ascii")
        except UnicodeDecodeError as exc:
            raise KeyRegistryError("key material is neither PEM, a 32-byte seed nor text") from exc
    else:
        text = material
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=password)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyRegistryError(f"cannot load PEM private key for {name!r}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyRegistryError(f"PEM key for {name!r} is not an Ed25519 key")
        return SigningKey(name, key, not_before, not_after)
    if text.startswith(_PRIVATE_PREFIX):
        parts = text[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise KeyRegistryError("note signer key must be PRIVATE+KEY+name+keyid+key")
        key_name, hex_id, blob = parts
        if key_name != name:
            raise KeyRegistryError(f"note signer key is named {key_name!r}, expected {name!r}")
        raw = _b64decode(blob, "note signer key")
        if len(raw) != 33 or raw[0] != ED25519_SIGNATURE_TYPE:
            raise KeyRegistryError("note signer key is not an Ed25519 (type 0x01) key")
        signing = SigningKey(
            name, Ed25519PrivateKey.from_private_bytes(raw[1:]), not_before, not_after
        )
        if f"{signing.key_id:08x}" != hex_id:
            raise KeyRegistryError("note signer key ID does not match its key")
        return signing
    seed = _b64decode(text, "key seed")
    if len(seed) != 32:
        raise KeyRegistryError("base64 key seed must decode to 32 bytes")
    return SigningKey(name, Ed25519PrivateKey.from_private_bytes(seed), not_before, not_after)


class KeyRegistry:
    """The set of known checkpoint keys, looked up by (name, key ID) as notes require.

    Holds private keys on the signing server and public keys only on an
    auditor's machine; both sides verify through the same registry.
    """

    def __init__(self, keys: Iterable[SigningKey | VerifierKey] = ()) -> None:
        self._verifiers: dict[tuple[str, int], VerifierKey] = {}
        self._signers: dict[tuple[str, int], SigningKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: SigningKey | VerifierKey) -> None:
        """Register a key; the same (name, key ID) twice with different material is an error."""
        public = key.public if isinstance(key, SigningKey) else key
        ident = (public.name, public.key_id)
        existing = self._verifiers.get(ident)
        if existing is not None and existing != public:
            raise KeyRegistryError(
                f"key {public.name}+{public.key_id:08x} already registered differently"
            )
        self._verifiers[ident] = public
        if isinstance(key, SigningKey):
            self._signers[ident] = key
        logger.debug("registered checkpoint key %s+%08x", public.name, public.key_id)

    def lookup(self, name: str, key_id: int) -> VerifierKey | None:
        """The known key with this name and ID, or None."""
        return self._verifiers.get((name, key_id))

    def signers_at(self, at: datetime) -> list[SigningKey]:
        """Private keys whose window contains ``at`` (several during a rotation overlap)."""
        return [k for k in self._signers.values() if k.valid_at(at)]

    def verifiers(self) -> list[VerifierKey]:
        """All known public keys."""
        return list(self._verifiers.values())

    def verifier_strings(self) -> list[str]:
        """All public keys as note verifier-key strings."""
        return [v.verifier_string() for v in self._verifiers.values()]

    def public_only(self) -> KeyRegistry:
        """A copy without private keys, e.g. to hand to verification code."""
        return KeyRegistry(self._verifiers.values())

    def public_manifest(self) -> list[dict[str, str | None]]:
        """JSON-ready public keys with windows (ISO 8601 UTC) for auditors."""
        return [
            {
                "verifier": v.verifier_string(),
                "not_before": v.not_before.isoformat() if v.not_before else None,
                "not_after": v.not_after.isoformat() if v.not_after else None,
            }
            for v in self._verifiers.values()
        ]

    @classmethod
    def from_public_manifest(cls, entries: Iterable[Mapping[str, str | None]]) -> KeyRegistry:
        """Rebuild a verify-only registry from :meth:`public_manifest` output."""
        keys: list[VerifierKey] = []
        for entry in entries:
            vkey = entry.get("verifier")
            if not isinstance(vkey, str):
                raise KeyRegistryError("manifest entry lacks a 'verifier' string")
            keys.append(
                VerifierKey.parse(
                    vkey,
                    not_before=_parse_time(entry.get("not_before")),
                    not_after=_parse_time(entry.get("not_after")),
                )
            )
        return cls(keys)

    def __len__(self) -> int:
        return len(self._verifiers)

    def __iter__(self) -> Iterator[VerifierKey]:
        return iter(list(self._verifiers.values()))

    def __repr__(self) -> str:
        return f"KeyRegistry({len(self._verifiers)} keys, {len(self._signers)} private)"


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise KeyRegistryError(f"bad ISO 8601 time {value!r}") from exc
    return _utc(parsed, "manifest time")
