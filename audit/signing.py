"""The audit signing keys from configuration: ``VBANK_AUDIT_KEYS`` or ``<data dir>/audit.key``.

Why: checkpoints and evidence bundles are signed with Ed25519 keys that rotate. The
setting lists every key with its validity window, so during an overlap two keys sign and
after it the old one only verifies. Format, comma-separated::

    name:material:not_before:not_after

``material`` is a base64 Ed25519 seed (32 bytes; a key that can sign) or a note verifier
key ``name+keyid+base64`` (public only: an old key kept for verification). Times are
empty (open), a date ``2026-01-31`` or a basic ISO 8601 UTC time ``20260131T120000Z``
(no colons); times without a zone are UTC. When the variable is unset, one key is
generated into ``audit.key`` (mode 0600) like the other secrets. Seeds are never logged.

The running app installs its registry (:func:`install`) so request handlers can verify
without threading the keys through (:func:`installed_registry`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from audit.keys import KeyRegistry, KeyRegistryError, SigningKey, VerifierKey, load_signing_key

if TYPE_CHECKING:
    from vbank.config import Settings

__all__ = [
    "AuditKeyError",
    "install",
    "installed_registry",
    "parse_audit_keys",
    "parse_time",
    "registry_from_settings",
]

logger = logging.getLogger(__name__)

_installed: KeyRegistry | None = None


class AuditKeyError(ValueError):
    """The audit key setting is malformed (the message never contains key material)."""


def parse_time(text: str) -> datetime | None:
    """An optional UTC time: empty, ``YYYY-MM-DD`` or ISO 8601 (basic or extended)."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise AuditKeyError(f"bad time {text!r} (use 2026-01-31 or 20260131T120000Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_audit_keys(value: str) -> KeyRegistry:
    """Parse the setting into a registry (private keys where seeds are given)."""
    keys: list[SigningKey | VerifierKey] = []
    for index, item in enumerate(value.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) != 4:
            raise AuditKeyError(f"entry {index} must be name:material:not_before:not_after")
        name, material, nb_text, na_text = (p.strip() for p in parts)
        nb, na = parse_time(nb_text), parse_time(na_text)
        try:
            if material.startswith(name + "+"):  # name+keyid+key (a seed is 44 base64)
                vkey = VerifierKey.parse(material, not_before=nb, not_after=na)
                if vkey.name != name:
                    raise AuditKeyError(f"entry {index}: verifier key is not named {name!r}")
                keys.append(vkey)
            else:
                keys.append(load_signing_key(name, material, not_before=nb, not_after=na))
        except KeyRegistryError as exc:
            # the library's messages name the problem, never the key bytes
            raise AuditKeyError(f"entry {index} ({name!r}): {exc}") from None
    if not keys:
        raise AuditKeyError("no audit key given")
    try:
        return KeyRegistry(keys)
    except KeyRegistryError as exc:
        raise AuditKeyError(str(exc)) from None


def registry_from_settings(settings: Settings) -> KeyRegistry:
    """The configured keys; generated into the data directory when none are configured."""
    from vbank.config import AUDIT_KEY_FILE, load_or_create_secret

    spec = settings.audit_keys or load_or_create_secret(settings.data_dir, AUDIT_KEY_FILE)
    return parse_audit_keys(spec)


def install(registry: KeyRegistry) -> None:
    """Make ``registry`` the process-wide one (the app does this at start-up)."""
    global _installed
    _installed = registry
    logger.info("audit signing keys installed (%d key(s))", len(registry))


def installed_registry() -> KeyRegistry:
    """The registry the app installed; ``LookupError`` when none was."""
    if _installed is None:
        raise LookupError("no audit key registry installed (is the app running?)")
    return _installed
