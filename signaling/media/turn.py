"""STUN/TURN configuration and time-limited TURN credentials (TURN REST API).

The "TURN REST API" scheme (draft-uberti-behave-turn-rest, coturn's
``use-auth-secret``) lets the TURN server verify credentials it never stored:
username = ``<expiry unix time>:<user id>``, password =
base64(HMAC-SHA1(shared secret, username)). The browser gets credentials that
stop working at the expiry, and the shared secret never leaves our servers.

Pure functions, no I/O. The user id ends up in TURN server logs: pass an
opaque id (e.g. a per-call id), never a name or account number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiortc import RTCIceServer

STUN_SCHEMES = ("stun:", "stuns:")
TURN_SCHEMES = ("turn:", "turns:")
DEFAULT_TTL_S = 3600


@dataclass(frozen=True)
class TurnCredentials:
    username: str
    password: str
    expires_at: int


@dataclass(frozen=True)
class IceConfig:
    """ICE server settings, as loaded from the service configuration."""

    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = None
    """Shared secret configured on the TURN server (``static-auth-secret``)."""
    ttl_s: int = DEFAULT_TTL_S

    def __post_init__(self) -> None:
        for url in self.stun_urls:
            if not url.startswith(STUN_SCHEMES):
                raise ValueError("STUN URLs must start with stun: or stuns:")
        for url in self.turn_urls:
            if not url.startswith(TURN_SCHEMES):
                raise ValueError("TURN URLs must start with turn: or turns:")
        if self.turn_urls and not self.turn_secret:
            raise ValueError("TURN URLs need a shared secret")
        if self.ttl_s <= 0:
            raise ValueError("TURN credential lifetime must be positive")

    @classmethod
    def from_urls(
        cls, urls: Sequence[str], turn_secret: str | None = None, ttl_s: int = DEFAULT_TTL_S
    ) -> IceConfig:
        """Split one list of ``stun:``/``turn:`` URLs (e.g. from an env variable)."""
        cleaned = [u.strip() for u in urls if u.strip()]
        stun = tuple(u for u in cleaned if u.startswith(STUN_SCHEMES))
        turn = tuple(u for u in cleaned if u.startswith(TURN_SCHEMES))
        unknown = [u for u in cleaned if u not in stun and u not in turn]
        if unknown:
            raise ValueError("ICE server URLs must start with stun:, stuns:, turn: or turns:")
        return cls(stun_urls=stun, turn_urls=turn, turn_secret=turn_secret, ttl_s=ttl_s)


def turn_credentials(
    secret: str | bytes, user_id: str, ttl_s: int = DEFAULT_TTL_S, now: float | None = None
) -> TurnCredentials:
    """TURN REST credentials for ``user_id`` valid for ``ttl_s`` seconds from ``now``."""
    if not user_id or ":" in user_id:
        raise ValueError("TURN user id must be non-empty and contain no ':'")
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("TURN shared secret is empty")
    expires_at = int(now if now is not None else time.time()) + ttl_s
    username = f"{expires_at}:{user_id}"
    digest = hmac.new(key, username.encode(), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(digest).decode("ascii"), expires_at)


def browser_ice_servers(
    config: IceConfig, user_id: str, now: float | None = None
) -> list[dict[str, object]]:
    """The ``iceServers`` value for the browser's ``RTCPeerConnection`` (JSON-ready)."""
    servers: list[dict[str, object]] = []
    if config.stun_urls:
        servers.append({"urls": list(config.stun_urls)})
    if config.turn_urls and config.turn_secret:
        creds = turn_credentials(config.turn_secret, user_id, config.ttl_s, now)
        servers.append(
            {
                "urls": list(config.turn_urls),
                "username": creds.username,
                "credential": creds.password,
            }
        )
    return servers


def server_ice_servers(
    config: IceConfig, user_id: str = "vbank-server", now: float | None = None
) -> tuple[RTCIceServer, ...]:
    """The same servers for the server's own aiortc peer connections.

    Credentials are minted at call time, so build this per session (or at least
    well within ``ttl_s``) rather than once at start-up.
    """
    servers: list[RTCIceServer] = []
    if config.stun_urls:
        servers.append(RTCIceServer(urls=list(config.stun_urls)))
    if config.turn_urls and config.turn_secret:
        creds = turn_credentials(config.turn_secret, user_id, config.ttl_s, now)
        servers.append(
            RTCIceServer(
                urls=list(config.turn_urls), username=creds.username, credential=creds.password
            )
        )
    return tuple(servers)
