"""The SSRF guard: only public http(s) destinations unless an endpoint allows private ones."""

from __future__ import annotations

import pytest

from vbank.webhooks.ssrf import (
    BlockedAddress,
    GuardedResolver,
    InvalidURL,
    check_resolves_public,
    is_public,
    parse_url,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "ff02::1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(address)


def test_public_addresses() -> None:
    assert is_public("8.8.8.8") and is_public("2001:4860:4860::8888")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "gopher://example.com",
        "/relative",
        "http://",
        "https://user:pw@example.com/",
        "https://example.com/#frag",
        " https://example.com/",
        "",
    ],
)
def test_malformed_urls(url: str) -> None:
    with pytest.raises(InvalidURL):
        parse_url(url, allow_private=True)


def test_literal_private_addresses_need_the_exception() -> None:
    for url in ("http://127.0.0.1:8080/h", "http://[::1]/h", "http://169.254.169.254/latest"):
        with pytest.raises(BlockedAddress):
            parse_url(url, allow_private=False)
        assert parse_url(url, allow_private=True).host
    assert parse_url("https://8.8.8.8/hook", allow_private=False).host == "8.8.8.8"


async def test_names_resolving_to_loopback_are_refused() -> None:
    with pytest.raises(BlockedAddress):
        await check_resolves_public("localhost")
    resolver = GuardedResolver()
    try:
        with pytest.raises(BlockedAddress):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    await check_resolves_public("no-such-host.invalid")  # unresolvable now: checked again later
