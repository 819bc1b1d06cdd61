"""A process pool for face work, so that detection and encoding never block the event loop.

dlib releases the GIL only in parts, and one encoding costs ~100 ms of CPU, so face work runs in
worker processes. Each worker loads the dlib models once (initializer); the functions it runs
must be top-level and picklable (e.g. :func:`vbank.identity.quality.track_frame`,
:func:`vbank.identity.matching.encode_live`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import ParamSpec, TypeVar

import cv2

from vbank.identity import _models

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def default_workers() -> int:
    """One worker per usable CPU, leaving one for the event loop (at least one)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def _init_worker() -> None:
    """Worker initializer: load the dlib models once per process, keep OpenCV single-threaded.

    Each worker is meant to use one core; OpenCV's own thread pool would oversubscribe them.
    """
    cv2.setNumThreads(1)
    _models.load_models()


def _ping() -> int:
    return os.getpid()


class FacePool:
    """``await pool.run(fn, *args)`` runs ``fn`` in a worker process with the models loaded.

    Workers are started with ``spawn`` (not ``fork``): the server process has threads (aiohttp,
    aiortc) and forking a threaded process can deadlock.
    """

    def __init__(self, max_workers: int | None = None, *, start_method: str = "spawn") -> None:
        self.max_workers = max_workers or default_workers()
        self._executor = ProcessPoolExecutor(
            max_workers=self.max_workers,
            mp_context=multiprocessing.get_context(start_method),
            initializer=_init_worker,
        )
        logger.info("face pool with %d worker(s)", self.max_workers)

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` in a worker and await its result."""
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    async def warm_up(self) -> list[int]:
        """Start every worker now (loading models takes ~2 s) rather than on the first call."""
        pids = await asyncio.gather(*(self.run(_ping) for _ in range(self.max_workers)))
        return list(pids)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers; pending calls are cancelled."""
        self._executor.shutdown(wait=wait, cancel_futures=True)

    async def __aenter__(self) -> FacePool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)
