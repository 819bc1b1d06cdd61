"""TURN REST credentials and ICE server lists."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from aiortc import RTCIceServer

from signaling.media.turn import (
    IceConfig,
    browser_ice_servers,
    server_ice_servers,
    turn_credentials,
)

NOW = 1_700_000_000


def test_credentials_follow_turn_rest_scheme() -> None:
    creds = turn_credentials("s3cret", "call-42", ttl_s=600, now=NOW)
    assert creds.username == f"{NOW + 600}:call-42"
    assert creds.expires_at == NOW + 600
    expected = hmac.new(b"s3cret", creds.username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(creds.password) == expected


def test_known_vector() -> None:
    # computed independently: printf '1700003600:alice' | openssl dgst -sha1 -hmac secret -binary | base64
    creds = turn_credentials(b"secret", "alice", ttl_s=3600, now=NOW)
    assert creds.username == "1700003600:alice"
    assert creds.password == "LLPLO4qjdVL2qZhwr3eImhn7J20="


@pytest.mark.parametrize("user", ["", "a:b"])
def test_rejects_bad_user_id(user: str) -> None:
    with pytest.raises(ValueError):
        turn_credentials("secret", user, now=NOW)


def test_rejects_empty_secret() -> None:
    with pytest.raises(ValueError):
        turn_credentials("", "alice", now=NOW)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        IceConfig(stun_urls=("turn:x",))
    with pytest.raises(ValueError):
        IceConfig(turn_urls=("stun:x",), turn_secret="s")
    with pytest.raises(ValueError):
        IceConfig(turn_urls=("turn:x",))
    with pytest.raises(ValueError):
        IceConfig(ttl_s=0)
    with pytest.raises(ValueError):
        IceConfig.from_urls(["http://x"])


def test_from_urls_splits_and_strips() -> None:
    cfg = IceConfig.from_urls(
        [" stun:stun.example.org:3478", "turns:turn.example.org:443?transport=tcp", ""],
        turn_secret="s",
    )
    assert cfg.stun_urls == ("stun:stun.example.org:3478",)
    assert cfg.turn_urls == ("turns:turn.example.org:443?transport=tcp",)


def test_browser_json() -> None:
    cfg = IceConfig(
        stun_urls=("stun:stun.example.org",),
        turn_urls=("turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443"),
        turn_secret="secret",
        ttl_s=120,
    )
    servers = browser_ice_servers(cfg, "call-1", now=NOW)
    assert servers[0] == {"urls": ["stun:stun.example.org"]}
    turn = servers[1]
    assert turn["urls"] == list(cfg.turn_urls)
    assert turn["username"] == f"{NOW + 120}:call-1"
    assert turn["credential"] == turn_credentials("secret", "call-1", 120, NOW).password


def test_browser_json_without_turn() -> None:
    assert browser_ice_servers(IceConfig(), "x") == []
    assert browser_ice_servers(IceConfig(stun_urls=("stun:a",)), "x") == [{"urls": ["stun:a"]}]


def test_server_ice_servers() -> None:
    cfg = IceConfig(stun_urls=("stun:a",), turn_urls=("turn:b",), turn_secret="k", ttl_s=60)
    stun, turn = server_ice_servers(cfg, now=NOW)
    assert stun == RTCIceServer(urls=["stun:a"])
    assert turn.urls == ["turn:b"]
    assert turn.username == f"{NOW + 60}:vbank-server"
    assert turn.credential == turn_credentials("k", "vbank-server", 60, NOW).password
