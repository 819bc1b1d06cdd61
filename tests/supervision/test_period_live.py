"""Reporting periods (validation, defaults) and the live queue/agent snapshot."""

from __future__ import annotations

import random
from datetime import UTC, date

import pytest

from vbank.contact.routing import Router
from vbank.supervision.live import AgentEntry, agent_rows, queue_cards
from vbank.supervision.period import PeriodError, parse_period

TODAY = date(2026, 3, 20)


def period(first: str | None, last: str | None, max_days: int = 92) -> tuple[str, str]:
    p = parse_period(first, last, today=TODAY, tz=UTC, max_days=max_days)
    return p.first.isoformat(), p.last.isoformat()


def test_defaults_and_bounds() -> None:
    assert period(None, None) == ("2026-03-14", "2026-03-20")  # the last seven days
    assert period(None, "2026-02-03") == ("2026-01-28", "2026-02-03")
    assert period("2026-03-18", None) == ("2026-03-18", "2026-03-20")
    assert period("2026-03-25", None) == ("2026-03-25", "2026-03-25")
    assert period("2026-03-01", "2026-03-01") == ("2026-03-01", "2026-03-01")
    assert period("2026-01-01", "2026-04-02") == ("2026-01-01", "2026-04-02")  # 92 days


@pytest.mark.parametrize(
    ("first", "last", "why"),
    [
        ("2026-3-1", None, "YYYY-MM-DD"),
        ("2026-02-30", "2026-03-01", "calendar"),
        ("yesterday", None, "YYYY-MM-DD"),
        ("2026-03-01", "2026-03-01T00:00", "YYYY-MM-DD"),
        ("2026-03-02", "2026-03-01", "after"),
        ("2026-01-01", "2026-04-03", "longer than 92"),
        ("２０２６-03-01", None, "YYYY-MM-DD"),  # non-ASCII digits
    ],
)
def test_bad_periods(first: str, last: str | None, why: str) -> None:
    with pytest.raises(PeriodError, match=why):
        period(first, last)


def test_queue_cards_and_agent_rows_from_the_router() -> None:
    router = Router(["accounts", "cards", "loans"], rng=random.Random(1))
    router.add_agent("1", ["accounts"], capacity=2, status="available")
    router.add_agent("2", ["accounts", "cards"], capacity=1, status="away")
    router.add_agent("3", ["cards"], capacity=1, status="available")
    router.agent_disconnected("3", now=90.0)
    router.enqueue("c1", "accounts", 100.0)
    router.assign(100.0)  # c1 → agent 1
    router.enqueue("c2", "cards", 110.0)
    router.enqueue("c3", "cards", 115.0)
    router.enqueue("c4", "loans", 140.0)
    cards = {
        c["skill"]: c
        for c in queue_cards(
            ["accounts", "cards", "loans"],
            router.queued(),
            router.agents(),
            now=150.5,
            avg_wait_s=router.wait_time_s,
        )
    }
    assert cards["accounts"] == {
        "skill": "accounts",
        "queued": 0,
        "longest_wait_s": None,
        "avg_wait_s": 0,
        "agents_available": 1,
        "free_slots": 1,
    }
    assert (cards["cards"]["queued"], cards["cards"]["longest_wait_s"]) == (2, 40)
    assert cards["cards"]["agents_available"] == 0  # 2 is away, 3 disconnected
    assert cards["cards"]["avg_wait_s"] is None
    assert (cards["loans"]["queued"], cards["loans"]["longest_wait_s"]) == (1, 10)

    directory = [
        AgentEntry(1, "Ana", frozenset({"accounts"}), 2),
        AgentEntry(2, "bo", frozenset({"accounts", "cards"}), 1),
        AgentEntry(3, "Cy", frozenset({"cards"}), 1),
        AgentEntry(4, "Dee", frozenset({"loans"}), 3),  # never connected
    ]
    rows = agent_rows(directory, router.agents())
    assert [(r["agent_id"], r["state"], r["load"], r["capacity"]) for r in rows] == [
        (1, "available", 1, 2),
        (2, "away", 0, 1),
        (3, "offline", 0, 1),
        (4, "offline", 0, 3),
    ]
    assert rows[0]["name"] == "Ana" and rows[1]["skills"] == ["accounts", "cards"]
