"""`vbank bench webhooks`: events through the transactional outbox, delivered signed by
the worker to a receiver on loopback, against bare aiohttp POSTs to the same receiver in
the same run (``baseline_posts_per_s``).

The receiver verifies every signature and de-duplicates by ``webhook-id``; ``lost`` counts
events that never arrived and ``duplicates_after_dedup`` events that arrived under more
than one id (both must be 0).  Retries of one id are at-least-once delivery and counted
apart (``redelivered``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select

from audit.envelope import MasterKeyring
from audit.log import SYSTEM
from vbank.db import Database, is_sqlite
from vbank.migrate import upgrade
from vbank.webhooks import endpoints
from vbank.webhooks.models import WebhookDelivery, WebhookEndpoint
from vbank.webhooks.outbox import enqueue
from vbank.webhooks.signing import SignatureError, verify
from vbank.webhooks.worker import Worker, WorkerConfig

ENQUEUE_BATCH = 100
EVENT = "transaction.executed"


class Receiver:
    """Counts posts, distinct ids and events per id; refuses bad signatures with 400."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.posts = 0
        self.bad = 0
        self.events_by_id: dict[str, int] = {}
        self.done = asyncio.Event()
        self.expected = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/plain", self._plain)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _plain(self, request: web.Request) -> web.Response:
        await request.read()
        self.posts += 1
        return web.Response(status=204)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts += 1
        try:
            msg_id = verify(self.secrets, body, request.headers)
        except SignatureError:
            self.bad += 1
            return web.Response(status=400)
        if msg_id not in self.events_by_id:
            self.events_by_id[msg_id] = json.loads(body)["data"]["seq"]
            if len(self.events_by_id) >= self.expected:
                self.done.set()
        return web.Response(status=204)


async def _baseline(port: int, n: int, concurrency: int, body: bytes) -> float:
    """Bare aiohttp POSTs of a same-sized body with the same concurrency."""
    queue = iter(range(n))
    async with aiohttp.ClientSession() as client:

        async def one() -> None:
            for _ in queue:
                async with client.post(f"http://127.0.0.1:{port}/plain", data=body) as resp:
                    await resp.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


async def _run(url: str, events: int, concurrency: int, batch: int) -> dict[str, Any]:
    upgrade(url)
    db = Database(url)
    receiver = Receiver()
    keyring = MasterKeyring({"bench": secrets.token_bytes(32)}, current="bench")
    await receiver.start()
    worker = Worker(
        db, keyring, WorkerConfig(batch=batch, concurrency=concurrency, poll_s=0.5), name="bench"
    )
    try:
        async with db.sessions() as session:
            others = (
                await session.execute(select(func.count()).where(WebhookEndpoint.enabled.is_(True)))
            ).scalar_one()
        if others:
            raise SystemExit("the database has enabled webhook endpoints: use an empty one")
        async with db.transaction() as session:
            view, secret = await endpoints.create(
                session,
                keyring,
                url=f"http://127.0.0.1:{receiver.port}/hook",
                event_types=[EVENT],
                allow_private=True,
                actor=SYSTEM,
            )
        receiver.secrets = [secret]
        receiver.expected = events

        t0 = time.perf_counter()
        for start in range(0, events, ENQUEUE_BATCH):
            async with db.transaction() as session:
                for seq in range(start, min(events, start + ENQUEUE_BATCH)):
                    await enqueue(session, EVENT, {"seq": seq, "reference": f"L{seq}"})
        enqueue_s = time.perf_counter() - t0

        async with db.sessions() as session:
            sample = (await session.execute(select(WebhookDelivery.body).limit(1))).scalar_one()
        baseline = await _baseline(receiver.port, events, concurrency, sample.encode())
        receiver.posts = 0

        t0 = time.perf_counter()
        await worker.start()
        try:
            await asyncio.wait_for(receiver.done.wait(), timeout=max(60.0, events / 20))
        except TimeoutError:
            pass
        deliver_s = time.perf_counter() - t0
        await worker.stop()
        async with db.sessions() as session:
            states = dict(
                (
                    await session.execute(
                        select(WebhookDelivery.state, func.count())
                        .where(WebhookDelivery.endpoint_id == view.id)
                        .group_by(WebhookDelivery.state)
                    )
                ).all()
            )
        async with db.transaction() as session:
            await endpoints.remove(session, view.id, actor=SYSTEM)
    finally:
        await worker.stop()
        await receiver.stop()
        await db.close()
    per_event = Counter(receiver.events_by_id.values())
    deliveries_per_s = len(receiver.events_by_id) / deliver_s
    return {
        "database": "sqlite" if is_sqlite(url) else "postgresql",
        "events": events,
        "delivered": len(receiver.events_by_id),
        "delivered_rows": states.get("delivered", 0),
        "lost": events - len(per_event),
        "duplicates_after_dedup": sum(n - 1 for n in per_event.values() if n > 1),
        "redelivered": receiver.posts - len(receiver.events_by_id) - receiver.bad,
        "bad_signatures": receiver.bad,
        "deliveries_per_s": round(deliveries_per_s),
        "enqueue_per_s": round(events / enqueue_s),
        "baseline_posts_per_s": round(baseline),
        "ratio": round(round(deliveries_per_s) / round(baseline), 3),
        "concurrency": concurrency,
        "batch": batch,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        return asyncio.run(_run(url, args.events, args.concurrency, args.batch))
