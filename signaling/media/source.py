"""Fan-out of one remote track (customer/agent x audio/video) to its consumers.

A source exists from the moment the session does, before the remote leg has
connected, so the other leg's relay tracks, the recorder and the tap can
subscribe up front; the late joiner then simply starts receiving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from .frames import Kind, MediaItem

logger = logging.getLogger(__name__)

KeyframeRequester = Callable[[], Awaitable[object]]


class Subscriber(Protocol):
    """Consumer of a source; ``push`` runs on the event loop and must not block."""

    def push(self, item: MediaItem) -> None: ...

    def source_ended(self) -> None: ...


class MediaSource:
    """Delivers each item to every subscriber and rate-limits keyframe requests."""

    def __init__(self, role: str, kind: Kind, *, keyframe_min_interval: float = 0.5) -> None:
        self.role = role
        self.kind: Kind = kind
        self._subscribers: list[Subscriber] = []
        self._requester: KeyframeRequester | None = None
        self._min_interval = keyframe_min_interval
        self._last_request = -1e9
        self._tasks: set[asyncio.Task[object]] = set()
        self._deferred: asyncio.TimerHandle | None = None
        self._ended = False
        self.items = 0
        self.keyframe_requests = 0

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def attached(self) -> bool:
        return self._requester is not None

    def subscribe(self, subscriber: Subscriber) -> None:
        if self._ended:
            subscriber.source_ended()
        elif subscriber not in self._subscribers:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def attach(self, requester: KeyframeRequester | None) -> None:
        """Connect the source to the remote sender, so keyframes can be asked for."""
        self._requester = requester

    def publish(self, item: MediaItem) -> None:
        if self._ended:
            return
        self.items += 1
        for subscriber in tuple(self._subscribers):
            try:
                subscriber.push(item)
            except Exception:
                logger.exception("media subscriber failed (%s %s)", self.role, self.kind)

    def request_keyframe(self) -> None:
        """Ask the remote sender for a keyframe, at most once per ``keyframe_min_interval``.

        A request inside the interval is deferred to its end rather than dropped,
        and requests made meanwhile are merged into it (one keyframe serves all).
        """
        if self._ended or self._requester is None or self.kind != "video":
            return
        if self._deferred is not None:
            return
        wait = self._last_request + self._min_interval - time.monotonic()
        if wait > 0:
            self._deferred = asyncio.get_running_loop().call_later(wait, self._deferred_request)
            return
        self._send_request()

    def _deferred_request(self) -> None:
        self._deferred = None
        if not self._ended and self._requester is not None:
            self._send_request()

    def _send_request(self) -> None:
        assert self._requester is not None
        self._last_request = time.monotonic()
        self.keyframe_requests += 1
        task: asyncio.Task[object] = asyncio.ensure_future(self._request(self._requester))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _request(requester: KeyframeRequester) -> object:
        try:
            return await requester()
        except (ConnectionError, asyncio.CancelledError):
            return None
        except Exception:
            logger.exception("keyframe request failed")
            return None

    async def close(self) -> None:
        """End the source: subscribers are told, pending keyframe requests cancelled."""
        if self._ended:
            return
        self._ended = True
        self._requester = None
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        for task in tuple(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            try:
                subscriber.source_ended()
            except Exception:
                logger.exception("media subscriber failed on end (%s %s)", self.role, self.kind)
