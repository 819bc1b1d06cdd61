"""Group commit: units of work that arrive together run in one transaction, in one thread.

The asyncio drivers pay a thread hand-off for every statement (aiosqlite) and a commit per
transaction; a transfer is a few dozen statements, so that hand-off, not SQLite, sets the
pace.  :class:`GroupWriter` runs each *unit* (a plain function of a blocking
:class:`~sqlalchemy.orm.Session`) in a dedicated thread and puts the units queued while a
batch was running into the next batch: one hand-off and one commit per batch.  Each unit
runs inside a savepoint, so a unit that raises is rolled back alone and its caller gets the
exception; audit events a unit defers (:func:`defer_audit`) are appended once per batch, in
unit order, inside the same transaction.

On PostgreSQL a batch that hits a serialization failure or deadlock is retried whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from audit.log import NewEvent, append_many_sync

logger = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[Session], Any]

MAX_BATCH = 128
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
MAX_ATTEMPTS = 5
_AUDIT_KEY = "vbank.deferred_audit"


def defer_audit(session: Session, event: NewEvent) -> None:
    """Queue an audit event for the end of the batch (same transaction, unit order)."""
    session.info.setdefault(_AUDIT_KEY, []).append(event)


def _sqlstate(exc: DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", "") or getattr(orig, "pgcode", "") or "")


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None


class GroupWriter:
    """Runs units of work in batched transactions on one blocking connection."""

    def __init__(self, sync_url: Any, *, sqlite: bool, max_batch: int = MAX_BATCH) -> None:
        from vbank.db import configure_sqlite

        kwargs: dict[str, Any] = {"pool_size": 1, "max_overflow": 0}
        if not sqlite:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(sync_url, **kwargs)
        if sqlite:
            configure_sqlite(self.engine)
        self.max_batch = max_batch
        self._queue: list[tuple[Unit, asyncio.Future[Any]]] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="vbank-writer")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.units = 0

    async def run(self, unit: Callable[[Session], T]) -> T:
        """Run ``unit(session)`` in the next batch; its result or exception comes back."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((unit, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="vbank-group-writer")
        result: T = await future
        return result

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            units = [u for u, _ in batch]
            try:
                outcomes = await loop.run_in_executor(self._executor, self._run_batch, units)
            except Exception as exc:  # begin or commit failed: no unit took effect
                outcomes = [_Outcome(error=exc) for _ in units]
            except BaseException:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(RuntimeError("the database writer stopped"))
                raise
            for (_, fut), out in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if out.error is not None:
                    fut.set_exception(out.error)
                else:
                    fut.set_result(out.value)

    def _run_batch(self, units: list[Unit]) -> list[_Outcome]:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self._attempt(units)
            except DBAPIError as exc:
                if _sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt == MAX_ATTEMPTS:
                    raise
                logger.info("write batch retried after %s", _sqlstate(exc))
        raise AssertionError("unreachable")

    def _attempt(self, units: list[Unit]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            deferred: list[NewEvent] = session.info.setdefault(_AUDIT_KEY, [])
            for unit in units:
                mark = len(deferred)
                try:
                    with session.begin_nested():
                        value = unit(session)
                    outcomes.append(_Outcome(value=value))
                except DBAPIError as exc:
                    if _sqlstate(exc) in RETRYABLE_SQLSTATES:
                        raise  # the whole batch is retried
                    del deferred[mark:]
                    outcomes.append(_Outcome(error=exc))
                except Exception as exc:
                    del deferred[mark:]
                    outcomes.append(_Outcome(error=exc))
            append_many_sync(session, deferred)
            deferred.clear()
        self.batches += 1
        self.units += len(units)
        return outcomes

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)
        self.engine.dispose()
