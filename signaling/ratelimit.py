"""Token buckets and per-connection flood protection for the websocket.

Pure: time comes from an injectable monotonic clock, so tests drive it by hand. A
connection gets a :class:`FloodGuard`; the handler asks it before parsing a frame
(:meth:`FloodGuard.admit_frame`: frame and byte rate) and after parsing it
(:meth:`FloodGuard.admit_message`: per-type rate, e.g. chat lines). Rejections answer
``error{rate_limited}``; a client that keeps flooding is told to disconnect.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BYTE_LIMIT",
    "DEFAULT_FRAME_LIMIT",
    "DEFAULT_STRIKE_LIMIT",
    "DEFAULT_TYPE_LIMITS",
    "Clock",
    "FloodGuard",
    "Limit",
    "TokenBucket",
    "Verdict",
]

Clock = Callable[[], float]


class TokenBucket:
    """Classic token bucket: ``rate`` tokens/second refill, at most ``burst`` stored.

    Starts full. A clock going backwards is treated as no time passing.
    """

    def __init__(self, rate: float, burst: float, *, clock: Clock = time.monotonic) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be a positive finite number")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError("burst must be a finite number >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def _refill(self, now: float | None = None) -> None:
        """Add the tokens earned since the last refill; ``now`` is a clock reading the
        caller already has (one per frame for both of :meth:`FloodGuard.admit_frame`'s buckets)."""
        if now is None:
            now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = max(self._last, now)

    @property
    def tokens(self) -> float:
        """Tokens available right now."""
        self._refill()
        return self._tokens

    def try_acquire(self, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if available; never blocks, never goes negative."""
        if cost < 0:
            raise ValueError("cost must be >= 0")
        self._refill()
        return self._take(cost)

    def _take(self, cost: float) -> bool:
        """:meth:`try_acquire` right after a refill (one clock read per check)."""
        if cost <= self._tokens:
            self._tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be available (``inf`` if never: cost > burst)."""
        if cost > self.burst:
            return math.inf
        self._refill()
        return max(0.0, (cost - self._tokens) / self.rate)


@dataclass(frozen=True, slots=True)
class Limit:
    """A bucket configuration: sustained ``rate`` per second and ``burst`` size."""

    rate: float
    burst: float

    def bucket(self, clock: Clock) -> TokenBucket:
        return TokenBucket(self.rate, self.burst, clock=clock)


class Verdict(StrEnum):
    ALLOW = "allow"
    REJECT = "reject"  # drop the frame, answer error{rate_limited}
    DISCONNECT = "disconnect"  # persistent flooding: close the websocket (1008)


#: All frames of a connection (any type): 20/s sustained, bursts of 40.
DEFAULT_FRAME_LIMIT: Final = Limit(rate=20, burst=40)
#: Bytes received per connection: 64 KiB/s sustained, 256 KiB burst (4 max-size frames).
DEFAULT_BYTE_LIMIT: Final = Limit(rate=64 * 1024, burst=256 * 1024)
#: Rejections tolerated: a client flooding for ~20 frames beyond its limits is cut off.
DEFAULT_STRIKE_LIMIT: Final = Limit(rate=0.5, burst=20)
#: Stricter limits for types that cost us more (stored chat, media work).
DEFAULT_TYPE_LIMITS: Final[Mapping[str, Limit]] = MappingProxyType(
    {
        "chat.send": Limit(rate=2, burst=10),
        "contact.start": Limit(rate=0.1, burst=3),
        "contact.transfer": Limit(rate=0.5, burst=3),
        "video.request": Limit(rate=0.2, burst=3),
        "video.offer": Limit(rate=0.2, burst=4),
        "video.answer": Limit(rate=0.2, burst=4),
        "video.ice": Limit(rate=20, burst=60),
        "agent.status": Limit(rate=1, burst=5),
        "ping": Limit(rate=1, burst=5),
    }
)


class FloodGuard:
    """Flood protection for one websocket connection.

    Every rejection also costs a *strike* token; when strikes run out the verdict is
    ``DISCONNECT`` (occasional bursts are tolerated, sustained flooding is not).
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        frame_limit: Limit = DEFAULT_FRAME_LIMIT,
        byte_limit: Limit = DEFAULT_BYTE_LIMIT,
        type_limits: Mapping[str, Limit] = DEFAULT_TYPE_LIMITS,
        strike_limit: Limit = DEFAULT_STRIKE_LIMIT,
    ) -> None:
        self._clock = clock
        self._frames = frame_limit.bucket(clock)
        self._bytes = byte_limit.bucket(clock)
        self._type_limits = dict(type_limits)
        self._per_type: dict[str, TokenBucket] = {}
        self._strikes = strike_limit.bucket(clock)
        self.rejected = 0

    def _reject(self, what: str) -> Verdict:
        self.rejected += 1
        if not self._strikes.try_acquire():
            logger.info("flood guard: disconnecting after %d rejections (%s)", self.rejected, what)
            return Verdict.DISCONNECT
        return Verdict.REJECT

    def admit_frame(self, size: int) -> Verdict:
        """Before parsing: count the frame and its ``size`` in bytes."""
        if size < 0:
            raise ValueError("size must be >= 0")
        if size > self._bytes.burst:
            return self._reject("frame larger than byte burst")
        frames, bytes_ = self._frames, self._bytes
        now = self._clock()  # one reading for both buckets
        frames._refill(now)
        bytes_._refill(now)
        if frames._tokens < 1 or bytes_._tokens < size:
            return self._reject("frame/byte rate")
        frames._take(1)
        bytes_._take(size)
        return Verdict.ALLOW

    def admit_message(self, msg_type: str) -> Verdict:
        """After parsing: apply the per-type limit of ``msg_type`` (if it has one)."""
        limit = self._type_limits.get(msg_type)
        if limit is None:
            return Verdict.ALLOW
        bucket = self._per_type.get(msg_type)
        if bucket is None:
            bucket = self._per_type[msg_type] = limit.bucket(self._clock)
        if bucket.try_acquire():
            return Verdict.ALLOW
        return self._reject(msg_type)

    def retry_after(self, msg_type: str | None = None) -> float:
        """Seconds until one more frame (of ``msg_type``) would be admitted."""
        wait = self._frames.retry_after()
        if msg_type is not None and msg_type in self._per_type:
            wait = max(wait, self._per_type[msg_type].retry_after())
        return wait
