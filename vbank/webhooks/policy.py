"""Delivery policy, pure: the retry schedule with jitter, Retry-After, response classes.

The schedule follows Standard Webhooks practice: immediately, then 5 s, 5 min, 30 min,
2 h, 5 h, 10 h, 10 h; ``scale`` shrinks it for tests and benchmarks.  A receiver's
``Retry-After`` can only postpone the next attempt, never bring it forward.
"""

from __future__ import annotations

import enum
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

# delay before attempt n+1 after n failed attempts (index n-1); attempt 1 is immediate
SCHEDULE_S: Final = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MAX_ATTEMPTS: Final = len(SCHEDULE_S) + 1
JITTER: Final = 0.2
MAX_RETRY_AFTER_S: Final = 24 * 3600.0

_rng = random.SystemRandom()


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    GONE = "gone"  # 410: the receiver asks us to stop; disable the endpoint
    RETRY = "retry"


def classify(status: int | None) -> Outcome:
    """2xx delivered, 410 gone, anything else (no answer, 3xx: redirects are not
    followed, 4xx, 5xx) is retried."""
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    return Outcome.RETRY


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)


def next_delay(
    failed_attempts: int,
    *,
    scale: float = 1.0,
    retry_after_s: float | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    rng: random.Random = _rng,
) -> float | None:
    """Seconds until the next attempt after ``failed_attempts`` failures; None when the
    delivery is exhausted (dead letter)."""
    if failed_attempts >= max_attempts:
        return None
    base = SCHEDULE_S[min(failed_attempts, len(SCHEDULE_S)) - 1] * scale
    delay = base * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay
