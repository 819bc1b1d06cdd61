"""The delivery worker: claims due outbox rows under a lease, sends them signed, and
records every attempt.

Claims are exclusive: on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets workers take
different rows at once; on SQLite the ``BEGIN IMMEDIATE`` claim transaction serialises
them.  A claimed row carries ``claimed_by`` and ``lease_until``; a worker that dies
leaves the lease to expire and another takes the row again (so receivers see
at-least-once delivery and de-duplicate by ``webhook-id``).  No transaction is held
while HTTP requests are in flight.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
from sqlalchemy import Select, Table, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit.envelope import EnvelopeError, MasterKeyring
from audit.log import append
from vbank.config import Settings
from vbank.db import Database
from vbank.db import utc as _aware
from vbank.evidence import keyring_from_settings
from vbank.webhooks import outbox, policy, signing, ssrf
from vbank.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookSecret
from vbank.webhooks.sealing import unseal

logger = logging.getLogger(__name__)

READ_LIMIT = 64 * 1024  # response bytes read (and discarded) so connections are reused


@dataclass(frozen=True)
class WorkerConfig:
    batch: int = 64
    concurrency: int = 16
    timeout_s: float = 10.0
    poll_s: float = 2.0
    backoff_scale: float = 1.0
    max_attempts: int = policy.MAX_ATTEMPTS
    lanes: int = 2  # batches in flight at once: one sends while another claims or records
    lease_s: float | None = None  # default: long enough for a whole batch to time out

    @property
    def lease(self) -> float:
        if self.lease_s is not None:
            return self.lease_s
        return self.timeout_s * math.ceil(self.batch / self.concurrency) + 30.0


@dataclass
class Job:
    """A claimed delivery with what sending it needs (the keys only in memory)."""

    id: int
    msg_id: str
    endpoint_id: int
    body: bytes
    attempts: int
    url: str
    allow_private: bool
    keys: list[bytes] = field(repr=False)


@dataclass(frozen=True)
class Result:
    job: Job
    at: datetime
    status: int | None
    duration_ms: int
    error: str | None
    retry_after_s: float | None


def _worker_name() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


def _error_class(exc: BaseException) -> str:
    """A short class for the attempt record: never a message (it could echo a URL)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssrf.BlockedAddress):
            return "ssrf_blocked"
        seen = seen.__cause__ or getattr(seen, "os_error", None)
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__[:64]


class Worker:
    """Delivers outbox rows until stopped; several may run against one database."""

    def __init__(
        self,
        db: Database,
        keyring: MasterKeyring,
        config: WorkerConfig | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.config = config or WorkerConfig()
        self.name = name or _worker_name()
        self._wakes = [asyncio.Event() for _ in range(max(1, self.config.lanes))]
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._guarded: aiohttp.ClientSession | None = None
        self._open: aiohttp.ClientSession | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        outbox.add_waker(self.wake)
        self._task = asyncio.create_task(self._lanes(), name=f"webhooks:{self.name}")

    def wake(self) -> None:
        for event in self._wakes:
            event.set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Finish the batch in flight (bounded by ``grace_s``), then close the clients.
        A batch cut short keeps its lease and is retried elsewhere after it expires."""
        outbox.remove_waker(self.wake)
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self.wake()
            grace = self.config.timeout_s + 5.0 if grace_s is None else grace_s
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.close()

    async def close(self) -> None:
        for client in (self._guarded, self._open):
            if client is not None:
                await client.close()
        self._guarded = self._open = None

    def _client(self, allow_private: bool) -> aiohttp.ClientSession:
        limit = max(4, self.config.concurrency * 2)
        if allow_private:
            if self._open is None:
                self._open = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=limit), trust_env=False
                )
            return self._open
        if self._guarded is None:
            connector = aiohttp.TCPConnector(limit=limit, resolver=ssrf.GuardedResolver())
            self._guarded = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._guarded

    async def _lanes(self) -> None:
        await asyncio.gather(*(self._run(event) for event in self._wakes))

    async def _run(self, wake: asyncio.Event) -> None:
        while not self._stopping:
            wake.clear()
            try:
                handled = await self.run_once()
            except Exception:
                logger.exception("webhook worker %s: batch failed", self.name)
                handled = 0
            if self._stopping:
                break
            if handled >= self.config.batch:
                continue
            try:
                delay = await self._idle_delay()
            except Exception:
                logger.exception("webhook worker %s: could not read the queue", self.name)
                delay = self.config.poll_s
            if delay <= 0:
                continue
            try:
                await asyncio.wait_for(wake.wait(), delay)
            except TimeoutError:
                pass

    async def _idle_delay(self) -> float:
        """Seconds until the earliest pending row could be claimed (capped by the poll)."""
        d = WebhookDelivery
        ready_at = case(
            (and_(d.lease_until.is_not(None), d.lease_until > d.next_attempt_at), d.lease_until),
            else_=d.next_attempt_at,
        )
        async with self.db.reads() as session:
            earliest = (
                await session.execute(
                    select(func.min(ready_at))
                    .join(WebhookEndpoint, WebhookEndpoint.id == d.endpoint_id)
                    .where(d.state == "pending", WebhookEndpoint.enabled.is_(True))
                )
            ).scalar_one_or_none()
        if earliest is None:
            return self.config.poll_s
        if isinstance(earliest, str):  # SQLite hands back text from a CASE expression
            earliest = datetime.fromisoformat(earliest)
        wait = (_aware(earliest) - datetime.now(UTC)).total_seconds()
        return min(self.config.poll_s, max(0.0, wait + 0.005))

    # -- one batch ---------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim due rows, send them, record the outcomes; returns how many were sent."""
        jobs = await self._claim()
        if not jobs:
            return 0
        sem = asyncio.Semaphore(self.config.concurrency)

        async def bounded(job: Job) -> Result:
            async with sem:
                return await self._send(job)

        results = await asyncio.gather(*(bounded(j) for j in jobs))
        await self._record(results)
        return len(results)

    @staticmethod
    def _due(now: datetime, limit: int) -> Select[int]:
        d, e = WebhookDelivery, WebhookEndpoint
        return (
            select(d.id)
            .join(e, e.id == d.endpoint_id)
            .where(
                d.state == "pending",
                d.next_attempt_at <= now,
                or_(d.lease_until.is_(None), d.lease_until < now),
                e.enabled.is_(True),
            )
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
        )

    async def _claim(self) -> list[Job]:
        d, e = WebhookDelivery, WebhookEndpoint
        now = datetime.now(UTC)
        async with self.db.reads() as session:  # an idle poll takes no write lock
            if (await session.execute(self._due(now, 1))).first() is None:
                return []
        async with self.db.transaction() as session:
            q = self._due(now, self.config.batch)
            if not self.db.is_sqlite:
                q = q.with_for_update(skip_locked=True, of=d)
            ids = list((await session.execute(q)).scalars())
            if not ids:
                return []
            lease_until = now + timedelta(seconds=self.config.lease)
            await session.execute(
                update(d)
                .where(d.id.in_(ids))
                .values(claimed_by=self.name, lease_until=lease_until)
                .execution_options(synchronize_session=False)
            )
            rows = (
                await session.execute(
                    select(
                        d.id, d.msg_id, d.endpoint_id, d.body, d.attempts, e.url, e.allow_private
                    )
                    .join(e, e.id == d.endpoint_id)
                    .where(d.id.in_(ids))
                    .order_by(d.next_attempt_at, d.id)
                )
            ).all()
            keys = await self._keys(session, {r.endpoint_id for r in rows})
        return [
            Job(
                id=r.id,
                msg_id=r.msg_id,
                endpoint_id=r.endpoint_id,
                body=r.body.encode(),
                attempts=r.attempts,
                url=r.url,
                allow_private=r.allow_private,
                keys=keys.get(r.endpoint_id, []),
            )
            for r in rows
        ]

    async def _keys(self, session: AsyncSession, endpoint_ids: set[int]) -> dict[int, list[bytes]]:
        found: dict[int, list[bytes]] = {}
        result = await session.execute(
            select(WebhookSecret.endpoint_id, WebhookSecret.id, WebhookSecret.sealed)
            .where(WebhookSecret.endpoint_id.in_(endpoint_ids))
            .order_by(WebhookSecret.id)
        )
        for ep_id, secret_id, sealed in result:
            try:
                found.setdefault(ep_id, []).append(unseal(sealed, self.keyring))
            except EnvelopeError:
                logger.error(
                    "webhook secret %d of endpoint %d cannot be unsealed", secret_id, ep_id
                )
        return found

    async def _send(self, job: Job) -> Result:
        at = datetime.now(UTC)
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            if not job.keys:
                raise LookupError("no usable signing secret")
            ssrf.parse_url(job.url, allow_private=job.allow_private)
            hdrs = signing.headers(job.keys, job.msg_id, int(time.time()), job.body)
            async with self._client(job.allow_private).post(
                job.url,
                data=job.body,
                headers=hdrs,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            ) as resp:
                status = resp.status
                retry_after = policy.parse_retry_after(resp.headers.get("Retry-After"), at)
                await resp.content.read(READ_LIMIT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is an attempt to record and retry
            error = _error_class(exc)
        duration_ms = int((time.perf_counter() - started) * 1000)
        return Result(job, at, status, duration_ms, error, retry_after)

    async def _record(self, results: Sequence[Result]) -> None:
        now = datetime.now(UTC)
        updates: list[dict[str, Any]] = []
        gone: set[int] = set()
        dead = 0
        for r in results:
            attempts = r.job.attempts + 1
            outcome = policy.classify(r.status if r.error is None else None)
            values: dict[str, Any] = {
                "b_id": r.job.id,
                "b_worker": self.name,
                "b_attempts": attempts,
                "b_last_status": r.status,
                "b_last_error": r.error,
                "b_state": "pending",
                "b_next_attempt_at": now,
                "b_finished_at": None,
            }
            if outcome is policy.Outcome.DELIVERED:
                values.update(b_state="delivered", b_finished_at=now)
            elif outcome is policy.Outcome.GONE:
                gone.add(r.job.endpoint_id)
                values.update(b_state="dead", b_last_error="endpoint_gone", b_finished_at=now)
            else:
                delay = policy.next_delay(
                    attempts,
                    scale=self.config.backoff_scale,
                    retry_after_s=r.retry_after_s,
                    max_attempts=self.config.max_attempts,
                )
                if delay is None:
                    dead += 1
                    values.update(b_state="dead", b_finished_at=now)
                else:
                    values["b_next_attempt_at"] = now + timedelta(seconds=delay)
            updates.append(values)
        d = cast(Table, WebhookDelivery.__table__)
        async with self.db.transaction() as session:
            await session.execute(
                insert(cast(Table, WebhookAttempt.__table__)),
                [
                    {
                        "delivery_id": r.job.id,
                        "attempt": r.job.attempts + 1,
                        "worker": self.name,
                        "at": r.at,
                        "status_code": r.status,
                        "duration_ms": r.duration_ms,
                        "error_class": r.error,
                    }
                    for r in results
                ],
            )
            await session.execute(
                update(d)
                .where(d.c.id == bindparam("b_id"), d.c.claimed_by == bindparam("b_worker"))
                .values(
                    claimed_by=None,
                    lease_until=None,
                    state=bindparam("b_state"),
                    attempts=bindparam("b_attempts"),
                    last_status=bindparam("b_last_status"),
                    last_error=bindparam("b_last_error"),
                    next_attempt_at=bindparam("b_next_attempt_at"),
                    finished_at=bindparam("b_finished_at"),
                ),
                updates,
            )
            for endpoint_id in sorted(gone):
                await self._disable_gone(session, endpoint_id, now)
        if dead:
            logger.warning(
                "webhook worker %s: %d deliveries moved to dead letters", self.name, dead
            )

    @staticmethod
    async def _disable_gone(session: AsyncSession, endpoint_id: int, now: datetime) -> None:
        """The receiver answered 410: disable the endpoint and stop its pending rows (they
        become dead letters, redeliverable once a supervisor enables it again)."""
        e, d = WebhookEndpoint, WebhookDelivery
        changed = await session.execute(
            update(e)
            .where(e.id == endpoint_id, e.enabled.is_(True))
            .values(enabled=False, disabled_reason="gone_410", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(d)
            .where(d.endpoint_id == endpoint_id, d.state == "pending")
            .values(state="dead", last_error="endpoint_gone", finished_at=now)
            .execution_options(synchronize_session=False)
        )
        if getattr(changed, "rowcount", 0):
            await append(
                session,
                "webhook.endpoint_disabled",
                {"endpoint_id": endpoint_id, "reason": "gone_410"},
            )
            logger.warning("webhook endpoint %d answered 410 and was disabled", endpoint_id)


def from_settings(db: Database, settings: Settings) -> Worker:
    """The app's worker, configured from ``VBANK_WEBHOOK_*``."""
    config = WorkerConfig(
        timeout_s=settings.webhook_timeout_s,
        poll_s=settings.webhook_poll_s,
        backoff_scale=settings.webhook_backoff_scale,
        max_attempts=settings.webhook_max_attempts,
    )
    return Worker(db, keyring_from_settings(settings), config)
