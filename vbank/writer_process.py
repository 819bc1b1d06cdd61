"""Group commit in a child process: bulk handlers run outside the event loop's GIL.

Why: :class:`vbank.writer.GroupWriter` runs batches in a thread of the serving process,
and that thread's Python work (building rows, hashing audit events, SQLAlchemy) holds the
GIL the event loop needs; each blocking call hands the GIL back and waits for it again
while the loop is busy.  Measured with 1,000 chat clients: the same loop relays about
6,400 messages/s with no storage and 2,300/s with storage in the thread.  A
:class:`ProcessWriter` runs the same :class:`~vbank.writer.BatchRunner` in a child
process with its own connection, so the loop only pickles the batch and reads back the
outcomes.

Only *bulk handlers* cross: module-level functions (pickled by reference) whose items
and outcomes are picklable, registered with :func:`process_safe`.  The child has no audit
listeners: a handler registered here must not write audit events of a type anything
subscribes to (``tests`` check this for chat).

The child starts on the first batch and again after it died; a batch in flight when it
dies fails for its callers (their writes may or may not have committed, which is why the
handlers here are idempotent on a client key).  Closing the parent's end stops the child.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import multiprocessing
import pickle
import select
import signal
import socket
import sqlite3
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.orm import Session

from vbank.db import checkpoint_wal
from vbank.writer import (
    MAX_BATCH,
    Batcher,
    BatchRunner,
    BulkHandler,
    Job,
    Outcome,
    fail,
    settle,
)

logger = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_RECV = 1 << 20
#: a batch of fewer than LINGER_JOBS jobs waits up to LINGER_S for more (like PostgreSQL's
#: commit_delay): at 2,000 chat lines/s a commit otherwise carried about 5 lines, and the
#: fixed cost of each commit kept the child busy most of the time on a 2-core machine.
#: Measured with `vbank bench signalling` at 2,000 lines/s: mean batch 5 -> 10, p99
#: median about 40 -> 32 ms (nine runs without, six with), p50 about 8 -> 10 ms;
#: throughput unchanged (its batches are larger). 4 ms was no better (p99 34-42 ms).
#: 1 ms, once a chat line cost the child less (dbapi, no last_seq): p99 lower than 2 ms in
#: 8 of 9 alternated pairs (medians 32.8 against 45.3 ms in the last 5, p50 6.4 against
#: 9.1 ms, mean batch 6-8 against 7-16 lines); throughput unchanged.
LINGER_S = 0.001
LINGER_JOBS = 16
_PROCESS_SAFE: set[BulkHandler] = set()
_ON_START: list[Callable[[Dialect], None]] = []
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
#: how often the child copies the WAL back into the database file (SQLite)
WAL_CHECKPOINT_S = 0.5
#: modules the fork server imports once, so that a child forked from it starts in
#: milliseconds.  A child still re-imports the main *script* (not ``python -m`` mains),
#: so the `vbank` console script's own import, vbank.cli, is preloaded too.
PRELOAD = ["vbank.cli", "vbank.writer", "vbank.contact.chat", "sqlalchemy.dialects.sqlite.pysqlite"]


def on_writer_start(warm: Callable[[Dialect], None]) -> Callable[[Dialect], None]:
    """Register ``warm`` to run in every writer child before its first batch (compiling
    statements, say), so that work is not paid by the first callers' latency."""
    _ON_START.append(warm)
    return warm


def process_safe(handler: Callable[[Session, list[Any]], Sequence[Any]]) -> Any:
    """Mark a module-level bulk handler as one a :class:`ProcessWriter` may run."""
    _PROCESS_SAFE.add(handler)
    return handler


class WriterProcessDied(RuntimeError):
    """The child stopped while it had a batch: its callers do not know if it committed."""


def _portable(outcomes: list[Outcome]) -> list[Outcome]:
    """Outcomes that pickle: an exception that does not becomes a RuntimeError naming it."""
    out = []
    for o in outcomes:
        if o.error is not None:
            try:
                pickle.dumps(o.error)
            except Exception:
                o = Outcome(error=RuntimeError(f"{type(o.error).__name__}: {o.error}"))
        out.append(o)
    return out


def _wire(outcomes: list[Outcome]) -> tuple[list[Any], dict[int, BaseException]]:
    """:func:`_portable` outcomes as the child sends them: every value in order, and the
    errors by position.

    Plain lists and tuples, not ``Outcome`` objects: the parent's event loop unpickles a
    batch's outcomes, and 127 chat lines took 0.23 ms as Outcome-wrapped dataclasses
    against 0.07 ms as named tuples in a list (timeit).
    """
    values: list[Any] = []
    errors: dict[int, BaseException] = {}
    for i, o in enumerate(outcomes):
        values.append(o.value)
        if o.error is not None:
            errors[i] = o.error
    return values, errors


class _Frames:
    """The child's side of the socket: frames of jobs, merged into batches.

    Why merge here: the parent sends what its event loop queued in each turn as soon as
    it can, and the child takes every frame that arrived while it was committing as one
    batch. Group commit then happens where the commits are, and the child never waits
    for a busy event loop to collect outcomes before it gets more work (measured with
    one batch in flight at a time: the child sat idle a fifth of the time under load).
    """

    def __init__(self, sock: socket.socket, max_batch: int) -> None:
        self._sock = sock
        self._max = max_batch
        self._buf = bytearray()
        self._ready: collections.deque[list[Job]] = collections.deque()
        self._eof = False

    def _take(self, data: bytes) -> None:
        if not data:
            self._eof = True
            return
        buf = self._buf
        buf += data
        while len(buf) >= _LEN.size:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < _LEN.size + n:
                break
            pairs = pickle.loads(memoryview(buf)[_LEN.size : _LEN.size + n])  # noqa: S301 - our parent, over a private socketpair
            del buf[: _LEN.size + n]
            self._ready.append([Job(None, handler, item) for handler, item in pairs])

    def _drain(self) -> None:
        while not self._eof:
            try:
                self._take(self._sock.recv(_RECV, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break

    def batch(self) -> list[Job] | None:
        """The next batch: waits for one frame, then adds the frames already here (whole
        frames, up to ``max_batch`` jobs); None once the parent hung up and all is done."""
        while not self._ready:
            if self._eof:
                return None
            self._take(self._sock.recv(_RECV))
        self._drain()
        if sum(len(r) for r in self._ready) < LINGER_JOBS and not self._eof:
            if select.select([self._sock], [], [], LINGER_S)[0]:
                self._drain()
        jobs = self._ready.popleft()
        while self._ready and len(jobs) + len(self._ready[0]) <= self._max:
            jobs += self._ready.popleft()
        return jobs


def child_main(sock: socket.socket, sync_url: URL | str, sqlite: bool, max_batch: int) -> None:
    """The child: run batches of what arrived, answer each with its outcomes, until the
    parent hangs up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us by closing the socket
    # what the fork server imported (the whole app) is never garbage here: keep it out of
    # the collector's scans (a full collection took 130-230 ms of a batch under load)
    gc.freeze()
    stop = threading.Event()
    if sqlite:
        # commits here never copy the WAL back (tens of milliseconds every few commits
        # under load); a thread of ours does, beside them
        runner = BatchRunner(sync_url, sqlite=True, autocheckpoint=0)
        path = make_url(sync_url).database or ""
        threading.Thread(
            target=_checkpoint_loop, args=(path, stop), name="wal-checkpoint", daemon=True
        ).start()
    else:
        runner = BatchRunner(sync_url, sqlite=False)
    for warm in _ON_START:
        warm(runner.engine.dialect)
    frames = _Frames(sock, max_batch)
    try:
        while (jobs := frames.batch()) is not None:
            try:
                outcomes = _portable(runner.run_batch(jobs))
            except Exception as exc:  # begin or commit failed: no job took effect
                [error] = _portable([Outcome(error=exc)])
                outcomes = [error] * len(jobs)
            data = pickle.dumps(_wire(outcomes), protocol=pickle.HIGHEST_PROTOCOL)
            sock.sendall(_LEN.pack(len(data)) + data)
    finally:
        stop.set()
        sock.close()
        runner.dispose()


def _checkpoint_loop(path: str, stop: threading.Event) -> None:
    while not stop.wait(WAL_CHECKPOINT_S):
        try:
            checkpoint_wal(path)
        except sqlite3.Error as exc:  # busy with another checkpoint, or gone: next time
            logger.info("WAL checkpoint skipped: %s", exc)


def _frame(batch: list[tuple[Job, asyncio.Future[Any]]]) -> bytes:
    data = pickle.dumps([(job.handler, job.item) for job, _ in batch], pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


@dataclass(eq=False)
class _Child:
    """One child process and the futures of the jobs it has been sent, in order."""

    proc: multiprocessing.process.BaseProcess
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    inflight: collections.deque[asyncio.Future[Any]] = field(default_factory=collections.deque)
    receiver: asyncio.Task[None] | None = None
    dead: bool = False


class ProcessWriter(Batcher):
    """A :class:`~vbank.writer.Batcher` whose batches run in a child process.

    It keeps the Batcher's queue and counters but not its drain (one batch in flight at
    a time): the jobs queued in one turn of the event loop leave as one frame at the end
    of that turn; outcomes come back in the order the jobs were sent and a reader task
    hands them to their callers. Several frames may be in flight: the child merges them.
    """

    def __init__(self, sync_url: URL | str, *, sqlite: bool, max_batch: int = MAX_BATCH) -> None:
        super().__init__(max_batch)
        self._url = sync_url
        self._sqlite = sqlite
        self._child: _Child | None = None
        self._sender: asyncio.Task[None] | None = None
        self.starts = 0

    async def _submit(self, job: Job) -> Any:
        if job.handler not in _PROCESS_SAFE:  # plain units (no handler) included
            what = job.handler or job.unit
            raise TypeError(f"only bulk handlers marked process_safe cross, not {what!r}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((job, future))
        if self._sender is None or self._sender.done():
            # runs after the rest of this turn: what it queues goes in the same frame
            self._sender = loop.create_task(self._send(), name="vbank-writer-send")
        return await future

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.proc.pid if child is not None and child.proc.is_alive() else None

    async def _send(self) -> None:
        try:
            await self._send_queued()
        except Exception as exc:  # the child did not start, or a bug: nobody waits forever
            logger.exception("the database writer could not send")
            fail([f for _, f in self._queue], exc)
            self._queue.clear()

    async def _send_queued(self) -> None:
        while self._queue:
            child = self._child if self._child is not None else await self._start()
            batch = [(j, f) for j, f in self._queue[: self.max_batch] if not f.done()]
            del self._queue[: self.max_batch]
            if not batch:
                continue
            try:
                data = _frame(batch)
            except Exception:  # an item that does not pickle fails alone
                batch = [(j, f) for j, f in batch if self._pickles(j, f)]
                if not batch:
                    continue
                data = _frame(batch)
            # no await between the check and the hand-over: a child found dead later has
            # these futures in its list and fails them
            if child.dead:
                self._queue[:0] = batch
                continue
            child.inflight.extend(f for _, f in batch)
            child.writer.write(data)
            with contextlib.suppress(ConnectionError):  # the receiver notices and fails them
                await child.writer.drain()

    async def _start(self) -> _Child:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        mine, theirs = socket.socketpair()
        proc = ctx.Process(
            target=child_main,
            args=(theirs, self._url, self._sqlite, self.max_batch),
            name="vbank-writer",
            daemon=True,
        )
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.start), START_TIMEOUT_S)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=mine)
        child = _Child(proc, reader, writer)
        child.receiver = asyncio.get_running_loop().create_task(
            self._receive(child), name="vbank-writer-receive"
        )
        self._child = child
        self.starts += 1
        logger.info("database writer process %s started", proc.pid)
        return child

    async def _receive(self, child: _Child) -> None:
        """Hand each batch's outcomes to the callers, in order, until the child stops."""
        try:
            while True:
                (n,) = _LEN.unpack(await child.reader.readexactly(_LEN.size))
                values, errors = pickle.loads(await child.reader.readexactly(n))  # noqa: S301 - our child
                self.batches += 1
                self.units += len(values)
                inflight = child.inflight
                for i, value in enumerate(values):
                    settle(inflight.popleft(), value, errors.get(i) if errors else None)
        except (ConnectionError, asyncio.IncompleteReadError):
            if child.inflight:
                logger.warning(
                    "database writer process %s stopped with %d jobs in flight",
                    child.proc.pid,
                    len(child.inflight),
                )
            await self._reap(child)

    def _pickles(self, job: Job, future: asyncio.Future[Any]) -> bool:
        try:
            pickle.dumps((job.handler, job.item), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            fail([future], exc)
            return False
        return True

    async def _reap(self, child: _Child) -> None:
        """Forget a child: fail what it had, close our end (it exits on EOF), wait for it,
        kill it if stuck."""
        if child.dead:
            return
        child.dead = True
        if self._child is child:
            self._child = None
        fail(child.inflight, WriterProcessDied("the database writer process stopped"))
        child.inflight.clear()
        child.writer.close()
        with contextlib.suppress(Exception):
            await child.writer.wait_closed()
        await asyncio.to_thread(child.proc.join, STOP_TIMEOUT_S)
        if child.proc.is_alive():
            logger.warning("database writer process %s did not stop: killed", child.proc.pid)
            child.proc.kill()
            await asyncio.to_thread(child.proc.join, STOP_TIMEOUT_S)

    async def close(self) -> None:
        """Let queued and in-flight jobs finish, then stop the child."""
        while True:
            child = self._child
            waiting = [f for _, f in self._queue]
            if child is not None:
                waiting += child.inflight
            if not waiting:
                break
            await asyncio.wait(waiting)
        child = self._child
        if child is not None:
            await self._reap(child)
            if child.receiver is not None:
                await asyncio.gather(child.receiver, return_exceptions=True)
