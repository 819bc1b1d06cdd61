"""Standard Webhooks signatures (https://www.standardwebhooks.com), pure.

``webhook-signature`` is a space-separated list of ``v1,`` + base64(HMAC-SHA256(secret,
"{id}.{timestamp}.{body}")), one per active secret, so a receiver keeps verifying while
the sender rotates.  Secrets are ``whsec_`` + base64 of the key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format prefix, not a secret
SECRET_BYTES: Final = 32
DEFAULT_TOLERANCE_S: Final = 5 * 60


class SignatureError(ValueError):
    """A webhook failed verification: missing header, stale timestamp or no valid signature."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret (the prefix is optional, as in the spec)."""
    b64 = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ + base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret must hold 24 to 64 bytes")
    return key


def sign_one(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,`` signature per key."""
    if not keys:
        raise ValueError("an endpoint needs at least one signing secret")
    return " ".join(sign_one(k, msg_id, timestamp, body) for k in keys)


def headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(keys, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secrets_: Iterable[str],
    body: bytes,
    hdrs: Mapping[str, str],
    *,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> str:
    """Check a received webhook as a receiver would; returns its ``webhook-id``.

    Any listed ``v1`` signature made with any of ``secrets_`` is enough; other versions
    are ignored.  The timestamp must be within ``tolerance_s`` of ``now`` (replays).
    """
    lowered = {k.lower(): v for k, v in hdrs.items()}
    msg_id = lowered.get("webhook-id")
    ts_text = lowered.get("webhook-timestamp")
    sig_header = lowered.get("webhook-signature")
    if not msg_id or not ts_text or not sig_header:
        raise SignatureError("missing webhook headers")
    try:
        ts = int(ts_text)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError("webhook-timestamp outside the tolerance")
    offered = [s.removeprefix("v1,") for s in sig_header.split(" ") if s.startswith("v1,")]
    for secret in secrets_:
        expected = sign_one(secret_bytes(secret), msg_id, ts, body).removeprefix("v1,")
        if any(hmac.compare_digest(expected, sig) for sig in offered):
            return msg_id
    raise SignatureError("no matching signature")
