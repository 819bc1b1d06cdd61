"""Signed single-use survey links: the token is the only credential a link carries.

A token is base64url(survey id (16 bytes) ‖ expiry (8 bytes, big-endian Unix seconds) ‖
HMAC-SHA256 over both).  The HMAC key is derived from the service secret with a label,
so the raw secret never signs anything and no other feature's MAC verifies here.  The
expiry is inside the MAC: an expired token is known to be genuine before any database
read, and a tampered one is refused without revealing whether its survey exists.
Single use is enforced by the database (``token_used_at``), not by the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from vbank.config import Settings

KEY_LABEL = b"vbank/survey-link/v1"
_ID_LEN = 16
_MAC_LEN = 32
_TOKEN_LEN = _ID_LEN + 8 + _MAC_LEN
LINK_PATH = "/survey"


def link_key(secret_key: str) -> bytes:
    """The link-signing key: HMAC(secret, label), never the secret itself."""
    return hmac.new(secret_key.encode(), KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def make_token(key: bytes, survey_id: str, expires_at: datetime) -> str:
    body = bytes.fromhex(survey_id) + struct.pack(">q", int(expires_at.timestamp()))
    return base64.urlsafe_b64encode(body + _mac(key, body)).rstrip(b"=").decode()


class TokenProblem(Enum):
    MALFORMED = "malformed"  # not a token of ours, or altered
    EXPIRED = "expired"


@dataclass(frozen=True)
class LinkClaim:
    survey_id: str
    expires_at: datetime


def read_token(key: bytes, token: str, now: datetime) -> LinkClaim | TokenProblem:
    """The survey a token names, or why it is refused (checked in constant time)."""
    if len(token) > 128:
        return TokenProblem.MALFORMED
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return TokenProblem.MALFORMED
    if len(raw) != _TOKEN_LEN:
        return TokenProblem.MALFORMED
    body, mac = raw[: _ID_LEN + 8], raw[_ID_LEN + 8 :]
    if not hmac.compare_digest(mac, _mac(key, body)):
        return TokenProblem.MALFORMED
    (expiry,) = struct.unpack(">q", body[_ID_LEN:])
    expires_at = datetime.fromtimestamp(expiry, UTC)
    if expires_at <= now:
        return TokenProblem.EXPIRED
    return LinkClaim(body[:_ID_LEN].hex(), expires_at)


def base_url(settings: Settings) -> str:
    """Where customers reach us: the public URL, else the listening host and port."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"http://{settings.host}:{settings.port}"


def link_url(settings: Settings, token: str) -> str:
    """The link sent by SMS or e-mail; the token rides in the fragment, so it never reaches
    access logs or a Referer (the page hands it to the API itself)."""
    return f"{base_url(settings)}{LINK_PATH}#t={token}"
