"""Webhook fixtures: a keyring, a loopback receiver, endpoints and fast workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest
from sqlalchemy import select

from audit.envelope import MasterKeyring
from audit.log import Actor
from tests.webhooks.receiver import Receiver
from vbank.config import Settings
from vbank.db import Database
from vbank.evidence import keyring_from_settings
from vbank.webhooks import endpoints
from vbank.webhooks.models import WebhookDelivery
from vbank.webhooks.worker import Worker, WorkerConfig

SUPERVISOR = Actor(None, "supervisor")
ALL_TYPES = ("contact.closed", "transaction.executed", "verification.completed")


@pytest.fixture
def keyring(settings: Settings) -> MasterKeyring:
    return keyring_from_settings(settings)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    yield r
    await r.stop()


MakeEndpoint = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
def make_endpoint(db: Database, keyring: MasterKeyring) -> MakeEndpoint:
    async def make(
        url: str, types: Iterable[str] = ALL_TYPES, *, allow_private: bool = True
    ) -> tuple[int, str]:
        async with db.transaction() as session:
            view, secret = await endpoints.create(
                session,
                keyring,
                url=url,
                event_types=types,
                allow_private=allow_private,
                actor=SUPERVISOR,
            )
        return view.id, secret

    return make


MakeWorker = Callable[..., Worker]


@pytest.fixture
async def make_worker(db: Database, keyring: MasterKeyring) -> AsyncIterator[MakeWorker]:
    workers: list[Worker] = []

    def make(**kw: Any) -> Worker:
        name = kw.pop("name", None)
        kw.setdefault("backoff_scale", 0.0001)
        kw.setdefault("poll_s", 0.05)
        kw.setdefault("timeout_s", 2.0)
        w = Worker(db, keyring, WorkerConfig(**kw), name=name)
        workers.append(w)
        return w

    yield make
    for w in workers:
        await w.stop(grace_s=1.0)


async def states(db: Database) -> dict[int, str]:
    async with db.sessions() as session:
        rows = await session.execute(select(WebhookDelivery.id, WebhookDelivery.state))
        return {i: s for i, s in rows}


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
