"""Real aiortc client peers talking to a real MediaSession over loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from signaling.media import MediaConfig, MediaManager, MediaSession
from signaling.media.session import Role
from signaling.media.testing import ClientPeer, PatternVideoTrack, SineAudioTrack

CUSTOMER_SIDE, AGENT_SIDE = 1, 2


@dataclass
class Call:
    session: MediaSession
    clients: dict[Role, ClientPeer]
    states: list[tuple[Role, str]] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    @property
    def customer(self) -> ClientPeer:
        return self.clients["customer"]

    @property
    def agent(self) -> ClientPeer:
        return self.clients["agent"]

    def connected_at(self, role: Role) -> float:
        leg = self.session._legs[role]
        assert leg.connected_at is not None
        return leg.connected_at

    async def join(self, role: Role) -> None:
        client = self.clients[role]
        answer = await self.session.accept_offer(role, await client.offer())
        await client.answer(answer)

    async def close_clients(self) -> None:
        for client in self.clients.values():
            await client.close()


def make_client(
    side: int, size: tuple[int, int] = (640, 480), fps: float = 15, video_codec: str | None = None
) -> ClientPeer:
    return ClientPeer(
        PatternVideoTrack(side, fps=fps, width=size[0], height=size[1]),
        SineAudioTrack(440.0 if side == CUSTOMER_SIDE else 660.0),
        video_codec=video_codec,
    )


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def settle_tasks(
    before: set[asyncio.Task[object]], timeout: float = 3.0
) -> set[asyncio.Task[object]]:
    """Tasks created since ``before`` that are still pending after ``timeout``."""
    current = asyncio.current_task()
    deadline = time.monotonic() + timeout
    while True:
        left = {
            t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()
        }
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.05)


def media_threads() -> list[str]:
    """Threads of ours or aiortc's that must be gone after a call ends."""
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("media-rec") or t.name.endswith("-decoder")
    ]


CallFactory = Callable[..., Awaitable[Call]]


@pytest.fixture
async def manager() -> AsyncIterator[Callable[..., MediaManager]]:
    managers: list[MediaManager] = []

    def make(**config: object) -> MediaManager:
        m = MediaManager(MediaConfig(**config))  # type: ignore[arg-type]
        managers.append(m)
        return m

    yield make
    for m in managers:
        await m.shutdown()


@pytest.fixture
async def make_call(
    manager: Callable[..., MediaManager], tmp_path: Path
) -> AsyncIterator[CallFactory]:
    calls: list[Call] = []

    async def factory(
        *,
        size: tuple[int, int] = (640, 480),
        fps: float = 15,
        customer_codec: str | None = None,
        agent_codec: str | None = None,
        join: tuple[Role, ...] = ("customer", "agent"),
        **config: object,
    ) -> Call:
        mgr = manager(**config)
        states: list[tuple[Role, str]] = []
        ended: list[str] = []
        session = mgr.create_session(
            f"call-{len(calls)}",
            tmp_path / f"call-{len(calls)}",
            on_state=lambda role, state: states.append((role, state)),
            on_ended=ended.append,
        )
        call = Call(
            session,
            {
                "customer": make_client(CUSTOMER_SIDE, size, fps, customer_codec),
                "agent": make_client(AGENT_SIDE, size, fps, agent_codec),
            },
            states,
            ended,
        )
        calls.append(call)
        for role in join:
            await call.join(role)
        return call

    yield factory
    for call in calls:
        await call.session.close("test_teardown")
        await call.close_clients()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Real-time media over loopback: retried when a loaded machine starves it."""
    for item in items:
        if "integration/media" in str(item.path):
            item.add_marker(pytest.mark.realtime)
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=2))
