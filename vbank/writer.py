"""Group commit: units of work that arrive together run in one transaction, in one thread.

The asyncio drivers pay a thread hand-off for every statement (aiosqlite) and a commit per
transaction; a transfer is a few dozen statements, so that hand-off, not SQLite, sets the
pace.  :class:`GroupWriter` runs each *unit* (a plain function of a blocking
:class:`~sqlalchemy.orm.Session`) in a dedicated thread and puts the units queued while a
batch was running into the next batch: one hand-off and one commit per batch.

A *bulk* unit names a handler that takes a list of items: the items of one handler that
share a batch are handed over together, so the handler can read and write them with one
statement each (``WHERE id IN …``, ``executemany``) instead of one per item.  A handler
returns one outcome per item: a result, or an exception *instance* for an item it refused
without writing anything.

Units run back to back; when a unit or handler raises, the batch is rolled back and run
again with each unit (and each bulk item, alone) in a savepoint, so whatever raised is
undone alone and its caller gets the exception.  Units must therefore be safe to run
twice: they only read and write the database.  Audit events a unit defers
(:func:`defer_audit`) are appended once per batch, in order, inside the same transaction.

On PostgreSQL a batch that hits a serialization failure or deadlock is retried whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from audit.log import NewEvent, append_many_sync

logger = logging.getLogger(__name__)

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a bulk unit
Unit = Callable[[Session], Any]
BulkHandler = Callable[[Session, list[Any]], Sequence[Any]]

MAX_BATCH = 256
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
MAX_ATTEMPTS = 5
_AUDIT_KEY = "vbank.deferred_audit"


def defer_audit(session: Session, event: NewEvent) -> None:
    """Queue an audit event for the end of the batch (same transaction, unit order)."""
    session.info.setdefault(_AUDIT_KEY, []).append(event)


def _sqlstate(exc: DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", "") or getattr(orig, "pgcode", "") or "")


class _UnitFailed(Exception):
    """A unit raised in a batch run without savepoints: run the batch the safe way."""


@dataclass
class Job:
    """A plain unit (``handler`` None) or one item of a bulk handler."""

    unit: Unit | None
    handler: BulkHandler | None
    item: Any


@dataclass
class Outcome:
    """What one job gave: a value, or the exception its caller gets."""

    value: Any = None
    error: BaseException | None = None


def settle(future: asyncio.Future[Any], value: Any, error: BaseException | None = None) -> None:
    """Hand a job's outcome to its caller (unless the caller gave up waiting)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def fail(futures: Iterable[asyncio.Future[Any]], exc: BaseException) -> None:
    """Fail every caller still waiting on one of ``futures`` with ``exc``."""
    for future in futures:
        if not future.done():
            future.set_exception(exc)


class BatchRunner:
    """Runs batches of jobs in one transaction each on one blocking connection.

    No asyncio here: :class:`GroupWriter` calls it in a thread and
    :mod:`vbank.writer_process` in a child process.
    """

    def __init__(self, sync_url: Any, *, sqlite: bool, **sqlite_options: Any) -> None:
        from vbank.db import configure_sqlite

        kwargs: dict[str, Any] = {"pool_size": 1, "max_overflow": 0}
        if not sqlite:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(sync_url, **kwargs)
        if sqlite:
            configure_sqlite(self.engine, **sqlite_options)

    def run_batch(self, jobs: list[Job]) -> list[Outcome]:
        """Every job's outcome; raises only if the batch as a whole could not commit."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                try:
                    return self._attempt(jobs, savepoints=False)
                except _UnitFailed:
                    # something raised: it may have written half its work, so the batch
                    # is rolled back and run again with a savepoint around every job
                    return self._attempt(jobs, savepoints=True)
            except DBAPIError as exc:
                if _sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt == MAX_ATTEMPTS:
                    raise
                logger.info("write batch retried after %s", _sqlstate(exc))
        raise AssertionError("unreachable")

    def _attempt(self, jobs: list[Job], *, savepoints: bool) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(jobs)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            deferred: list[NewEvent] = session.info.setdefault(_AUDIT_KEY, [])
            if savepoints:
                for i, job in enumerate(jobs):
                    outcomes[i] = self._alone(session, job, deferred)
            else:
                for indices in _groups(jobs):
                    self._together(session, jobs, indices, outcomes)
            append_many_sync(session, deferred)
            deferred.clear()
        assert all(o is not None for o in outcomes), "every job has its outcome"
        return cast(list[Outcome], outcomes)

    @staticmethod
    def _together(
        session: Session, jobs: list[Job], indices: list[int], outcomes: list[Outcome | None]
    ) -> None:
        first = jobs[indices[0]]
        try:
            if first.handler is None:
                assert first.unit is not None
                outcomes[indices[0]] = Outcome(value=first.unit(session))
                return
            results = first.handler(session, [jobs[i].item for i in indices])
        except DBAPIError as exc:
            if _sqlstate(exc) in RETRYABLE_SQLSTATES:
                raise  # the whole batch is retried
            raise _UnitFailed from exc
        except Exception as exc:
            raise _UnitFailed from exc
        if len(results) != len(indices):
            raise _UnitFailed(f"{first.handler!r} returned {len(results)} outcomes")
        for i, result in zip(indices, results, strict=True):
            if isinstance(result, Exception):
                outcomes[i] = Outcome(error=result)
            else:
                outcomes[i] = Outcome(value=result)

    @staticmethod
    def _alone(session: Session, job: Job, deferred: list[NewEvent]) -> Outcome:
        mark = len(deferred)
        try:
            with session.begin_nested():
                if job.handler is None:
                    assert job.unit is not None
                    return Outcome(value=job.unit(session))
                [result] = job.handler(session, [job.item])
                if isinstance(result, Exception):
                    raise result
                return Outcome(value=result)
        except DBAPIError as exc:
            if _sqlstate(exc) in RETRYABLE_SQLSTATES:
                raise
            del deferred[mark:]
            return Outcome(error=exc)
        except Exception as exc:
            del deferred[mark:]
            return Outcome(error=exc)

    def dispose(self) -> None:
        self.engine.dispose()


class Batcher:
    """Queues jobs from the event loop and hands whatever queued up meanwhile to
    :meth:`execute` as one batch; subclasses say where a batch runs."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._queue: list[tuple[Job, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.units = 0

    async def run(self, unit: Callable[[Session], T]) -> T:
        """Run ``unit(session)`` in the next batch; its result or exception comes back."""
        result: T = await self._submit(Job(unit, None, None))
        return result

    async def run_bulk(self, handler: Callable[[Session, list[I]], Sequence[Any]], item: I) -> Any:
        """Hand ``item`` to ``handler`` together with the other items of the batch; the
        item's outcome comes back (an exception instance is raised here)."""
        return await self._submit(Job(None, handler, item))

    async def _submit(self, job: Job) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((job, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="vbank-group-writer")
        return await future

    async def execute(self, jobs: list[Job]) -> list[Outcome]:
        raise NotImplementedError

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                outcomes = await self.execute([job for job, _ in batch])
            except Exception as exc:  # begin or commit failed: no unit took effect
                outcomes = [Outcome(error=exc) for _ in batch]
            except BaseException:
                fail([future for _, future in batch], RuntimeError("the database writer stopped"))
                raise
            self.batches += 1
            self.units += len(batch)
            for (_, future), out in zip(batch, outcomes, strict=True):
                settle(future, out.value, out.error)

    async def _finish(self) -> None:
        if self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)


class GroupWriter(Batcher):
    """Runs units of work in batched transactions on one blocking connection, in a thread."""

    def __init__(self, sync_url: Any, *, sqlite: bool, max_batch: int = MAX_BATCH) -> None:
        super().__init__(max_batch)
        self.runner = BatchRunner(sync_url, sqlite=sqlite)
        self.engine = self.runner.engine
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="vbank-writer")

    async def execute(self, jobs: list[Job]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.runner.run_batch, jobs)

    async def close(self) -> None:
        await self._finish()
        self._executor.shutdown(wait=True)
        self.runner.dispose()


def _groups(jobs: list[Job]) -> list[list[int]]:
    """Job indices grouped by bulk handler (in order of first appearance); every plain
    unit is a group of its own.  Jobs of one batch were submitted concurrently, so no
    order between different handlers is promised."""
    groups: list[list[int]] = []
    by_handler: dict[Any, list[int]] = {}
    for i, job in enumerate(jobs):
        if job.handler is None:
            groups.append([i])
            continue
        group = by_handler.get(job.handler)
        if group is None:
            group = by_handler[job.handler] = []
            groups.append(group)
        group.append(i)
    return groups
