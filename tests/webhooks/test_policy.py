"""Retry schedule, jitter, Retry-After and response classes (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from vbank.webhooks.policy import (
    MAX_ATTEMPTS,
    SCHEDULE_S,
    Outcome,
    classify,
    next_delay,
    parse_retry_after,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_schedule_is_the_standard_one() -> None:
    assert SCHEDULE_S == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert MAX_ATTEMPTS == 8


def test_delays_follow_the_schedule_with_jitter_then_exhaust() -> None:
    rng = random.Random(1)
    for failed, base in enumerate(SCHEDULE_S, start=1):
        delays = [next_delay(failed, rng=rng) for _ in range(50)]
        assert all(d is not None and 0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert next_delay(MAX_ATTEMPTS, rng=rng) is None
    assert next_delay(3, max_attempts=3) is None
    d = next_delay(1, scale=0.001, rng=rng)
    assert d is not None and d < 0.01


def test_retry_after_only_postpones() -> None:
    d = next_delay(1, retry_after_s=60)
    assert d == 60
    d = next_delay(3, retry_after_s=1)  # 30 min scheduled wins
    assert d is not None and d > 1000


def test_retry_after_forms() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=90), usegmt=True), NOW) == 0
    assert parse_retry_after("99999999", NOW) == 24 * 3600
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_classification() -> None:
    assert classify(200) is classify(204) is Outcome.DELIVERED
    assert classify(410) is Outcome.GONE
    for status in (None, 301, 400, 404, 429, 500, 503):
        assert classify(status) is Outcome.RETRY
