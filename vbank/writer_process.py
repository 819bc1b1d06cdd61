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
import contextlib
import gc
import logging
import multiprocessing
import pickle
import signal
import socket
import sqlite3
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from vbank.db import checkpoint_wal
from vbank.writer import MAX_BATCH, Batcher, BatchRunner, BulkHandler, Job, Outcome

logger = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_PROCESS_SAFE: set[BulkHandler] = set()
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
#: how often the child copies the WAL back into the database file (SQLite)
WAL_CHECKPOINT_S = 0.5
#: modules the fork server imports once, so that a child forked from it starts in
#: milliseconds.  A child still re-imports the main *script* (not ``python -m`` mains),
#: so the `vbank` console script's own import, vbank.cli, is preloaded too.
PRELOAD = ["vbank.cli", "vbank.writer", "vbank.contact.chat", "sqlalchemy.dialects.sqlite.pysqlite"]


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


def _read_frame(stream: Any) -> bytes | None:
    header = stream.read(_LEN.size)
    if len(header) < _LEN.size:
        return None
    (n,) = _LEN.unpack(header)
    body: bytes = stream.read(n)
    return body if len(body) == n else None


def child_main(sock: socket.socket, sync_url: URL | str, sqlite: bool) -> None:
    """The child: read a batch, run it, write its outcomes, until the parent hangs up."""
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
    stream = sock.makefile("rwb")
    try:
        while (frame := _read_frame(stream)) is not None:
            jobs = [Job(None, handler, item) for handler, item in pickle.loads(frame)]  # noqa: S301 - our parent, over a private socketpair
            try:
                outcomes = _portable(runner.run_batch(jobs))
            except Exception as exc:  # begin or commit failed: no job took effect
                [error] = _portable([Outcome(error=exc)])
                outcomes = [error] * len(jobs)
            data = pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
            stream.write(_LEN.pack(len(data)) + data)
            stream.flush()
    finally:
        stop.set()
        stream.close()
        sock.close()
        runner.dispose()


def _checkpoint_loop(path: str, stop: threading.Event) -> None:
    while not stop.wait(WAL_CHECKPOINT_S):
        try:
            checkpoint_wal(path)
        except sqlite3.Error as exc:  # busy with another checkpoint, or gone: next time
            logger.info("WAL checkpoint skipped: %s", exc)


class ProcessWriter(Batcher):
    """A :class:`~vbank.writer.Batcher` whose batches run in a child process."""

    def __init__(self, sync_url: URL | str, *, sqlite: bool, max_batch: int = MAX_BATCH) -> None:
        super().__init__(max_batch)
        self._url = sync_url
        self._sqlite = sqlite
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.starts = 0

    async def _submit(self, job: Job) -> Any:
        if job.handler not in _PROCESS_SAFE:  # plain units (no handler) included
            what = job.handler or job.unit
            raise TypeError(f"only bulk handlers marked process_safe cross, not {what!r}")
        return await super()._submit(job)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    async def _start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        mine, theirs = socket.socketpair()
        proc = ctx.Process(
            target=child_main,
            args=(theirs, self._url, self._sqlite),
            name="vbank-writer",
            daemon=True,
        )
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.start), START_TIMEOUT_S)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=mine)
        self._proc, self._reader, self._writer = proc, reader, writer
        self.starts += 1
        logger.info("database writer process %s started", proc.pid)
        return reader, writer

    async def execute(self, jobs: list[Job]) -> list[Outcome]:
        if self._reader is None or self._writer is None:
            reader, writer = await self._start()
        else:
            reader, writer = self._reader, self._writer
        data = pickle.dumps(
            [(job.handler, job.item) for job in jobs], protocol=pickle.HIGHEST_PROTOCOL
        )
        try:
            writer.write(_LEN.pack(len(data)) + data)
            await writer.drain()
            (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
            outcomes: list[Outcome] = pickle.loads(await reader.readexactly(n))  # noqa: S301 - our child
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            await self._reap()
            raise WriterProcessDied("the database writer process stopped") from exc
        except BaseException:
            # cancelled mid-exchange: the stream is out of step, start afresh next time
            await self._reap()
            raise
        return outcomes

    async def _reap(self) -> None:
        """Forget the child: close our end (it exits on EOF), wait for it, kill if stuck."""
        writer, proc = self._writer, self._proc
        self._reader = self._writer = None
        self._proc = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if proc is not None:
            await asyncio.to_thread(proc.join, STOP_TIMEOUT_S)
            if proc.is_alive():
                logger.warning("database writer process %s did not stop: killed", proc.pid)
                proc.kill()
                await asyncio.to_thread(proc.join, STOP_TIMEOUT_S)

    async def close(self) -> None:
        await self._finish()
        await self._reap()
