"""The HTTP adapter against a small core-banking server on loopback: retries with the same
key, 500 then 200, a timeout that leaves the outcome unknown until a status query."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from vbank.trading.backend import BackendUnavailable
from vbank.trading.http_adapter import HttpBackend
from vbank.trading.operations import OperationError, parse_operation

OP = parse_operation(
    {
        "kind": "own_transfer",
        "from_account": "VB1",
        "to_account": "VB2",
        "amount_minor": 500,
        "currency": "CNY",
    }
)


@dataclass
class Core:
    """A fake core system that executes each key once and can misbehave on demand."""

    fail_500: int = 0  # answer 500 to this many POSTs (without executing)
    slow_once_s: float = 0.0  # execute the first POST, then answer only after this delay
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: list[str] = field(default_factory=list)
    header_keys: list[str] = field(default_factory=list)
    executed: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/executions", self.post)
        app.router.add_get("/v1/executions/{key}", self.get)
        return app

    async def post(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = body["idempotency_key"]
        self.posts.append(key)
        self.header_keys.append(request.headers["Idempotency-Key"])
        if self.fail_500 > 0:
            self.fail_500 -= 1
            return web.json_response({"error": "busy"}, status=500)
        if body["operation"]["amount_minor"] > 1_000_000:
            return web.json_response(
                {"reason": "insufficient_funds", "message": "not enough money"}, status=422
            )
        if key in self.executions:
            return web.json_response({**self.executions[key], "replayed": True})
        self.executed += 1
        self.executions[key] = {
            "idempotency_key": key,
            "state": "executed",
            "kind": body["operation"]["kind"],
            "reference": f"CORE-{self.executed}",
            "amount_minor": body["operation"]["amount_minor"],
            "currency": body["operation"]["currency"],
            "executed_at": datetime.now(UTC).isoformat(),
        }
        if self.slow_once_s:
            delay, self.slow_once_s = self.slow_once_s, 0.0
            await asyncio.sleep(delay)
        return web.json_response(self.executions[key], status=201)

    async def get(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.executions:
            return web.json_response({"error": "unknown"}, status=404)
        return web.json_response(self.executions[key])


async def serve(core: Core) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(core.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def core() -> AsyncIterator[tuple[Core, HttpBackend]]:
    c = Core()
    runner, url = await serve(c)
    backend = HttpBackend(url, timeout_s=0.5, attempts=3, backoff_s=0.01)
    yield c, backend
    await backend.close()
    await runner.cleanup()


async def test_executes_once_per_key(core: tuple[Core, HttpBackend]) -> None:
    c, backend = core
    first = await backend.execute(OP, "http-key-0001", customer_id=1)
    again = await backend.execute(OP, "http-key-0001", customer_id=1)
    assert first.state == "executed" and first.reference == "CORE-1" and first.amount_minor == 500
    assert again == first and again.replayed
    assert c.executed == 1
    assert await backend.status("http-key-0001") == first
    assert await backend.status("http-key-0404") is None


async def test_500_then_200_retries_with_the_same_key(core: tuple[Core, HttpBackend]) -> None:
    c, backend = core
    c.fail_500 = 1
    ex = await backend.execute(OP, "http-key-0500", customer_id=1)
    assert ex.state == "executed"
    assert c.posts == ["http-key-0500", "http-key-0500"] == c.header_keys
    assert c.executed == 1


async def test_persistent_500_is_status_unknown(core: tuple[Core, HttpBackend]) -> None:
    c, backend = core
    c.fail_500 = 10
    ex = await backend.execute(OP, "http-key-0599", customer_id=1)
    assert ex.state == "status_unknown"
    assert len(c.posts) == 3
    assert await backend.status("http-key-0599") is None  # resolved: never executed


async def test_timeout_is_status_unknown_resolved_by_status_query(
    core: tuple[Core, HttpBackend],
) -> None:
    c, backend = core
    c.slow_once_s = 2.0
    ex = await backend.execute(OP, "http-key-0408", customer_id=1)
    assert ex.state == "status_unknown"
    assert c.posts == ["http-key-0408"]  # never posted again after the timeout
    resolved = await backend.status("http-key-0408")
    assert resolved is not None and resolved.state == "executed" and resolved.reference == "CORE-1"
    assert c.executed == 1 and c.posts == ["http-key-0408"]


async def test_refusal_from_the_core(core: tuple[Core, HttpBackend]) -> None:
    _, backend = core
    big = parse_operation({**OP.model_dump(), "amount_minor": 2_000_000})
    with pytest.raises(OperationError) as info:
        await backend.execute(big, "http-key-0422", customer_id=1)
    assert info.value.reason == "insufficient_funds"


async def test_unreachable_core_sends_nothing() -> None:
    c = Core()
    runner, url = await serve(c)
    await runner.cleanup()  # the port is closed now
    backend = HttpBackend(url, attempts=2, backoff_s=0.01)
    try:
        with pytest.raises(BackendUnavailable):
            await backend.execute(OP, "http-key-0000", customer_id=1)
        with pytest.raises(BackendUnavailable):
            await backend.status("http-key-0000")
    finally:
        await backend.close()
