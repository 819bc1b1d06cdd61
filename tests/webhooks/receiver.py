"""A real webhook receiver on loopback for the tests: records what arrives, answers as
scripted (a status per call), can be started late (to be "down" first)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from vbank.webhooks.signing import SignatureError, verify


@dataclass
class Received:
    msg_id: str
    timestamp: str
    signature: str
    body: bytes
    at: float
    status: int
    verified: bool


Script = Callable[["Receiver", str], tuple[int, dict[str, str]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def always(status: int) -> Script:
    return lambda _r, _id: (status, {})


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    secrets: list[str] = field(default_factory=list)
    script: Script = field(default_factory=lambda: always(200))
    delay_s: float = 0.0
    calls: list[Received] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_parallel_same_id: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        self.in_flight[msg_id] = self.in_flight.get(msg_id, 0) + 1
        self.max_parallel_same_id = max(self.max_parallel_same_id, self.in_flight[msg_id])
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            try:
                verify(self.secrets, body, request.headers)
                verified = True
            except SignatureError:
                verified = False
            status, headers = self.script(self, msg_id)
            self.calls.append(
                Received(
                    msg_id,
                    request.headers.get("webhook-timestamp", ""),
                    request.headers.get("webhook-signature", ""),
                    body,
                    time.monotonic(),
                    status,
                    verified,
                )
            )
            return web.Response(status=status, headers=headers, text="ok")
        finally:
            self.in_flight[msg_id] -= 1

    def ok_ids(self) -> set[str]:
        return {c.msg_id for c in self.calls if 200 <= c.status < 300}

    def calls_for(self, msg_id: str) -> list[Received]:
        return [c for c in self.calls if c.msg_id == msg_id]
