"""Token bucket and per-connection flood guard, driven by a fake clock."""

from __future__ import annotations

import math

import pytest

from signaling.ratelimit import FloodGuard, Limit, TokenBucket, Verdict


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_bucket_starts_full_and_allows_a_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=2, burst=5, clock=clock)
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]


def test_bucket_refills_at_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=2, burst=5, clock=clock)
    for _ in range(5):
        bucket.try_acquire()
    clock.advance(0.49)
    assert not bucket.try_acquire()
    clock.advance(0.01)
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    clock.advance(10)
    assert bucket.tokens == 5  # capped at burst


def test_sustained_rate_over_time(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=1, clock=clock)
    granted = 0
    for _ in range(10_000):  # try every millisecond for 10 s
        granted += bucket.try_acquire()
        clock.advance(0.001)
    assert 100 <= granted <= 101


def test_cost_and_retry_after(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=4, burst=8, clock=clock)
    assert bucket.try_acquire(6)
    assert not bucket.try_acquire(3)
    assert bucket.retry_after(3) == pytest.approx(0.25)
    assert bucket.retry_after(1) == 0
    assert bucket.retry_after(9) == math.inf
    assert not bucket.try_acquire(9)
    assert bucket.try_acquire(0)


def test_clock_going_backwards_adds_no_tokens(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1, burst=2, clock=clock)
    bucket.try_acquire(2)
    clock.advance(-100)
    assert bucket.tokens == 0
    clock.advance(100.5)  # back to where we were + 0.5 s
    assert bucket.tokens == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0.5), (1, math.inf)]
)
def test_bucket_rejects_bad_configuration(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_negative_cost_is_a_bug(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        TokenBucket(1, 1, clock=clock).try_acquire(-1)


# ------------------------------------------------------------------ flood guard


def guard(clock: FakeClock) -> FloodGuard:
    return FloodGuard(
        clock=clock,
        frame_limit=Limit(rate=10, burst=5),
        byte_limit=Limit(rate=1000, burst=2000),
        strike_limit=Limit(rate=1, burst=3),
    )


def test_frames_over_the_rate_are_rejected_then_admitted_again(clock: FakeClock) -> None:
    g = guard(clock)
    assert [g.admit_frame(10) for _ in range(6)] == [Verdict.ALLOW] * 5 + [Verdict.REJECT]
    assert g.retry_after() == pytest.approx(0.1)
    clock.advance(0.1)
    assert g.admit_frame(10) is Verdict.ALLOW


def test_persistent_flooding_disconnects(clock: FakeClock) -> None:
    g = guard(clock)
    verdicts = [g.admit_frame(10) for _ in range(9)]
    assert verdicts == [Verdict.ALLOW] * 5 + [Verdict.REJECT] * 3 + [Verdict.DISCONNECT]
    assert g.rejected == 4


def test_occasional_overshoot_does_not_disconnect(clock: FakeClock) -> None:
    g = guard(clock)
    for _ in range(100):  # one rejected frame per second, forever
        for _ in range(6):
            assert g.admit_frame(10) is not Verdict.DISCONNECT
        clock.advance(1)


def test_byte_rate(clock: FakeClock) -> None:
    g = guard(clock)
    assert g.admit_frame(1500) is Verdict.ALLOW
    assert g.admit_frame(600) is Verdict.REJECT  # only 500 bytes left
    assert g.admit_frame(400) is Verdict.ALLOW
    assert g.admit_frame(5000) is Verdict.REJECT  # larger than the burst: never fits
    clock.advance(1)
    assert g.admit_frame(1000) is Verdict.ALLOW


def test_rejected_frames_do_not_consume_tokens(clock: FakeClock) -> None:
    g = guard(clock)
    g.admit_frame(2000)
    assert g.admit_frame(1) is Verdict.REJECT  # no bytes left
    clock.advance(0.002)  # 2 bytes refilled
    assert g.admit_frame(1) is Verdict.ALLOW


def test_per_type_limits(clock: FakeClock) -> None:
    g = FloodGuard(
        clock=clock,
        type_limits={"chat.send": Limit(rate=1, burst=2)},
        strike_limit=Limit(rate=1, burst=10),
    )
    assert [g.admit_message("chat.send") for _ in range(3)] == [
        Verdict.ALLOW,
        Verdict.ALLOW,
        Verdict.REJECT,
    ]
    assert g.admit_message("ping") is Verdict.ALLOW  # no limit of its own
    assert g.retry_after("chat.send") == pytest.approx(1.0)
    clock.advance(1)
    assert g.admit_message("chat.send") is Verdict.ALLOW


def test_default_limits_stop_a_chat_flood(clock: FakeClock) -> None:
    g = FloodGuard(clock=clock)
    verdicts = []
    for _ in range(200):  # 100 chat lines per second for 2 s
        frame = g.admit_frame(200)
        verdicts.append(g.admit_message("chat.send") if frame is Verdict.ALLOW else frame)
        clock.advance(0.01)
    assert verdicts.count(Verdict.ALLOW) <= 10 + 2 * 2 + 1
    assert Verdict.DISCONNECT in verdicts


def test_negative_size_is_a_bug(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        guard(clock).admit_frame(-1)
