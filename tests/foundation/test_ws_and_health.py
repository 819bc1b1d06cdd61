from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from tests.conftest import MakeUser, signin
from vbank.context import SERVICES
from vbank.roles import Role

Client = TestClient[Any, Any]


async def test_websocket_needs_a_session(client: Client) -> None:
    try:
        await client.ws_connect("/ws")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 401
    else:
        raise AssertionError("anonymous websocket was accepted")


async def test_websocket_refuses_foreign_origin(client: Client, make_user: MakeUser) -> None:
    await make_user("alice", Role.CUSTOMER)
    await signin(client, "alice")
    try:
        await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("foreign-origin websocket was accepted")


async def test_websocket_answers_and_survives_bad_frames(
    client: Client, make_user: MakeUser
) -> None:
    await make_user("alice", Role.CUSTOMER)
    await signin(client, "alice")
    origin = f"http://{client.server.host}:{client.server.port}"
    ws = await client.ws_connect("/ws", headers={"Origin": origin})
    await ws.send_str("{oops")
    assert json.loads((await ws.receive()).data)["code"] == "bad_json"
    await ws.send_str(json.dumps({"v": 1, "type": "ping"}))
    assert json.loads((await ws.receive()).data)["type"] == "pong"
    await ws.close()


async def test_oversized_websocket_frame_closes_only_that_socket(
    client: Client, make_user: MakeUser
) -> None:
    await make_user("alice", Role.CUSTOMER)
    await signin(client, "alice")
    ws1 = await client.ws_connect("/ws")
    ws2 = await client.ws_connect("/ws")
    await ws1.send_str("x" * (65 * 1024))
    msg = await ws1.receive()
    assert msg.type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.CLOSING,
    )
    await ws2.send_str(json.dumps({"v": 1, "type": "ping"}))
    assert json.loads((await ws2.receive()).data)["type"] == "pong"
    await ws2.close()


async def test_health_and_readiness(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["database"] == "ok"


async def test_readiness_fails_when_database_is_gone(client: Client) -> None:
    services = client.server.app[SERVICES]
    from vbank.db import Database

    services.db = Database("postgresql+psycopg://nobody:x@127.0.0.1:1/none")
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["database"] == "down"


async def test_security_headers(client: Client) -> None:
    resp = await client.get("/signin")
    assert resp.status == 200
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_settle_heap_keeps_startup_objects_out_of_collections() -> None:
    import gc

    from vbank.app import FULL_COLLECTION_EVERY, settle_heap

    survivor: list[list[int]] = [[i] for i in range(1000)]  # lists: the collector tracks them
    gc.collect()
    probe = survivor[0]
    assert any(o is probe for o in gc.get_objects(generation=2))  # scanned by full collections
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults (another test may have settled)
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(survivor)
        assert not any(o is probe for o in gc.get_objects(generation=2))  # no longer
        assert gc.get_threshold() == (700, 10, FULL_COLLECTION_EVERY)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
