"""SSRF guard: webhooks go to public http(s) addresses only, unless an endpoint allows
private ones (a supervisor's explicit choice, e.g. a receiver inside the bank).

Checked when an endpoint is saved and again on every connection (DNS can change): the
resolver used for deliveries refuses a name that resolves to any non-public address,
and literal addresses are checked before the request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

SCHEMES: Final = frozenset({"http", "https"})
MAX_URL_LENGTH: Final = 2048


class InvalidURL(ValueError):
    """Not an absolute http(s) URL we are willing to call."""


class BlockedAddress(OSError):
    """The host is (or resolves to) a private, loopback, link-local, multicast or
    reserved address.  An ``OSError`` so aiohttp reports it as a connection failure."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_address(address: str) -> None:
    if not is_public(address):
        raise BlockedAddress(f"address {address} is not public")


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def parse_url(url: str, *, allow_private: bool) -> URL:
    """An endpoint URL: absolute http(s), a host, no credentials, no fragment; a literal
    address must be public unless ``allow_private``."""
    if not url or len(url) > MAX_URL_LENGTH or url != url.strip():
        raise InvalidURL("the URL is empty, too long or padded")
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise InvalidURL("the URL cannot be parsed") from None
    if parsed.scheme not in SCHEMES or not parsed.host or not parsed.is_absolute():
        raise InvalidURL("only absolute http and https URLs are allowed")
    if parsed.user or parsed.password:
        raise InvalidURL("credentials in the URL are not allowed")
    if parsed.fragment:
        raise InvalidURL("a fragment is not allowed")
    literal = _ip_literal(parsed.host)
    if literal is not None and not allow_private:
        check_address(literal)
    return parsed


async def check_resolves_public(host: str) -> None:
    """At save time: refuse a name that resolves to a non-public address now (a name
    that does not resolve yet is accepted; delivery checks again)."""
    if _ip_literal(host) is not None:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return
    for info in infos:
        check_address(str(info[4][0]))


class GuardedResolver(AbstractResolver):
    """The deliveries' resolver: every address a name resolves to must be public."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            check_address(result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()
