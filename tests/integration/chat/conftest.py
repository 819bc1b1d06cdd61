"""A websocket test client speaking the signalling protocol against the real app."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from signaling.protocol import parse_server_message
from tests.conftest import signin

_ids = itertools.count(1)


class Peer:
    """One signed-in user's websocket; collects every frame it receives."""

    def __init__(self, client: TestClient[Any, Any], ws: aiohttp.ClientWebSocketResponse) -> None:
        self.client = client
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.invalid: list[tuple[str, str]] = []  # (frame, why) for frames off the schema
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:  # every frame the server sends must be a valid server message
                    parse_server_message(msg.data)
                except ValidationError as exc:
                    self.invalid.append((msg.data, str(exc)))
                self.frames.append(json.loads(msg.data))
                self._new.set()
        self._new.set()

    async def send(self, type_: str, **fields: Any) -> str:
        mid = f"m{next(_ids)}"
        await self.ws.send_str(json.dumps({"v": 1, "type": type_, "id": mid, **fields}))
        return mid

    async def send_raw(self, data: str) -> None:
        await self.ws.send_str(data)

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The first frame (old or new) matching ``predicate``."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or (self.ws.closed and not self._new.is_set()):
                raise AssertionError(f"no matching frame; got {self.frames[-8:]}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_type(self, type_: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        return await self.wait_for(
            lambda f: f.get("type") == type_ and all(f.get(k) == v for k, v in match.items()),
            timeout,
        )

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == type_]

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


@pytest.fixture
async def server(aiohttp_server: Any, app: web.Application) -> TestServer:
    """One running server; every peer is its own client (own cookie jar) of it."""
    srv: TestServer = await aiohttp_server(app)
    return srv


@pytest.fixture
async def connect(aiohttp_client: Any, server: TestServer) -> Any:
    peers: list[Peer] = []

    async def make(
        username: str, *, hello: bool = True, resume: dict[str, int] | None = None
    ) -> Peer:
        client: TestClient[Any, Any] = await aiohttp_client(server)
        await signin(client, username)
        ws = await client.ws_connect("/ws")
        peer = Peer(client, ws)
        peers.append(peer)
        if hello:
            await peer.send("hello", resume=resume or {})
            await peer.wait_type("welcome")
        return peer

    yield make
    invalid = [bad for peer in peers for bad in peer.invalid]
    assert not invalid, f"the server sent frames off its schema: {invalid[:3]}"


async def assigned_contact(connect: Any, make_user: Any) -> tuple[Peer, Peer, str]:
    """Customer "cust" and agent "ana" (accounts), connected; a contact routed between them."""
    from vbank.roles import Role

    await make_user("cust", Role.CUSTOMER)
    await make_user("ana", Role.AGENT, skills=("accounts",))
    customer = await connect("cust")
    agent = await connect("ana")
    await agent.send("agent.status", status="available")
    mid = await customer.send("contact.start", skill="accounts")
    contact_id: str = (await customer.wait_type("ack", id=mid))["contact_id"]
    await agent.wait_type("contact.assigned", contact_id=contact_id)
    return customer, agent, contact_id


async def session_events(db: Any, contact_id: str) -> list[Any]:
    """The audit events of one contact, in order."""
    from sqlalchemy import select

    from audit.models import AuditEvent

    async with db.sessions() as session:
        query = (
            select(AuditEvent).where(AuditEvent.session_ref == contact_id).order_by(AuditEvent.seq)
        )
        return list((await session.execute(query)).scalars())
