"""The dashboard's arithmetic on hand-made rows, checked against hand-computed figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vbank.supervision.period import Period
from vbank.supervision.stats import (
    ContactRow,
    SurveyRow,
    VerificationRow,
    compute,
    nps_score,
    percent,
    tenths,
)

PERIOD = Period(date(2026, 3, 9), date(2026, 3, 11), UTC)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def test_tenths_rounds_half_to_even_exactly() -> None:
    assert tenths(2, 3) == Decimal("0.7")
    assert tenths(23, 20) == Decimal("1.2")  # 1.15 exactly: float round(1.15, 1) gives 1.1
    assert round(23 / 20, 1) == 1.1  # the drift this avoids
    assert tenths(5, 4) == Decimal("1.2")  # 1.25 → even
    assert tenths(27, 20) == Decimal("1.4")  # 1.35 → even
    assert tenths(-5, 4) == Decimal("-1.2")
    assert str(tenths(1, 1)) == "1.0"
    with pytest.raises(ValueError):
        tenths(1, 0)


def test_percent_and_nps() -> None:
    assert percent(0, 0) is None
    assert percent(2, 3) == Decimal("66.7")
    assert percent(1, 16) == Decimal("6.2")  # 6.25 → even
    assert percent(3, 16) == Decimal("18.8")  # 18.75 → even
    assert percent(3, 3) == Decimal("100.0")
    assert nps_score(0, 0, 0) is None
    assert nps_score(2, 1, 4) == Decimal("25.0")
    # One promoter, two detractors of six: 16.7 - 33.3 would say -16.6; exactly -16.67.
    assert nps_score(1, 2, 6) == Decimal("-16.7")
    assert nps_score(0, 5, 5) == Decimal("-100.0")


CONTACTS = [
    ContactRow(1, "accounts", at(10, 9), at(10, 9, 1)),  # 60 s
    ContactRow(1, "cards", at(10, 10), at(10, 10, 1, 30)),  # 90 s
    ContactRow(2, "accounts", at(11, 23), at(11, 23, 2, 1)),  # 121 s
    ContactRow(2, "accounts", at(11, 23), at(12, 0)),  # after the period (end exclusive)
    ContactRow(1, "accounts", at(8, 23), at(8, 23, 59, 59)),  # before it
    ContactRow(2, "accounts", None, at(9, 12)),  # counted, but no handle time
]
VERIFICATIONS = [
    VerificationRow(1, "accounts", at(10, 9), "approved"),
    VerificationRow(1, "accounts", at(10, 9, 30), "rejected"),
    VerificationRow(1, "cards", at(11, 8), "approved"),
    VerificationRow(2, "accounts", at(11, 9), "approved"),
    VerificationRow(2, "accounts", at(12, 9), "rejected"),  # after the period
]
SURVEYS = [
    SurveyRow(1, "accounts", at(10, 12), 5, 10),
    SurveyRow(1, "cards", at(10, 13), 3, 7),
    SurveyRow(2, "accounts", at(11, 10), 4, None),
    SurveyRow(2, "accounts", at(11, 11), 1, 0),
    SurveyRow(None, None, at(11, 12), 2, 9),  # no agent: counts in the total and the day
    SurveyRow(1, "accounts", at(12, 1), 5, 10),  # after the period
]


def test_report_by_agent_skill_day_and_total() -> None:
    report = compute(
        PERIOD, CONTACTS, VERIFICATIONS, SURVEYS, skills=("accounts", "cards", "loans")
    )
    a1, a2 = report.agents[1].metrics(), report.agents[2].metrics()
    assert (a1["contacts"], a1["aht_s"]) == (2, 75.0)
    assert (a2["contacts"], a2["aht_s"]) == (2, 121.0)
    assert (a1["verify_decided"], a1["verify_approved"], a1["verify_rate"]) == (3, 2, 66.7)
    assert a2["verify_rate"] == 100.0
    assert (a1["csat_answers"], a1["csat_pct"], a1["nps_answers"], a1["nps"]) == (2, 50.0, 2, 50.0)
    assert (a2["csat_answers"], a2["csat_pct"], a2["nps_answers"], a2["nps"]) == (
        2,
        50.0,
        1,
        -100.0,
    )

    accounts, cards = report.skills["accounts"].metrics(), report.skills["cards"].metrics()
    assert (accounts["contacts"], accounts["aht_s"]) == (3, 90.5)
    assert (cards["contacts"], cards["aht_s"]) == (1, 90.0)
    assert accounts["verify_rate"] == 66.7 and cards["verify_rate"] == 100.0
    assert (accounts["csat_pct"], accounts["nps"]) == (66.7, 0.0)
    assert report.skills["loans"].metrics()["contacts"] == 0  # listed although empty
    assert report.skills["loans"].metrics()["csat_pct"] is None

    total = report.total.metrics()
    assert (total["contacts"], total["aht_s"]) == (4, 90.3)  # 271 s / 3
    assert (total["verify_decided"], total["verify_rate"]) == (4, 75.0)
    assert (total["csat_answers"], total["csat_pct"]) == (5, 40.0)
    assert (total["nps_answers"], total["nps"]) == (4, 25.0)

    days = {d.isoformat(): t.metrics() for d, t in report.days.items()}
    assert list(days) == ["2026-03-09", "2026-03-10", "2026-03-11"]
    assert (days["2026-03-09"]["contacts"], days["2026-03-09"]["aht_s"]) == (1, None)
    assert (days["2026-03-10"]["contacts"], days["2026-03-10"]["aht_s"]) == (2, 75.0)
    assert days["2026-03-10"]["verify_rate"] == 50.0
    assert days["2026-03-09"]["verify_rate"] is None
    assert (days["2026-03-11"]["csat_pct"], days["2026-03-11"]["nps"]) == (33.3, 0.0)


def test_days_follow_the_configured_time_zone() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    period = Period(date(2026, 3, 10), date(2026, 3, 10), shanghai)
    assert period.start_utc == at(9, 16) and period.end_utc == at(10, 16)
    rows = [
        ContactRow(1, "accounts", at(9, 15, 59), at(9, 16, 0, 30)),  # 00:00:30 local on the 10th
        ContactRow(1, "accounts", at(10, 15), at(10, 16)),  # 00:00 on the 11th: outside
        # SQLite hands back naive datetimes: they are UTC.
        ContactRow(1, "accounts", datetime(2026, 3, 10, 1), datetime(2026, 3, 10, 1, 0, 10)),
    ]
    report = compute(period, rows, [], [])
    assert report.total.contacts == 2
    assert report.days[date(2026, 3, 10)].metrics()["aht_s"] == 50.0  # (90 + 10) / 2


def test_negative_handle_time_counts_as_zero() -> None:
    report = compute(PERIOD, [ContactRow(1, "accounts", at(10, 9, 5), at(10, 9))], [], [])
    assert report.total.metrics()["aht_s"] == 0.0


# ---------------------------------------------------------------------------- properties

moments = st.integers(min_value=0, max_value=5 * 86_400 - 1).map(
    lambda s: datetime(2026, 3, 8, tzinfo=UTC) + timedelta(seconds=s)
)
contact_rows = st.builds(
    lambda agent, skill, start, length: ContactRow(
        agent, skill, start, start + timedelta(seconds=length)
    ),
    st.integers(1, 4),
    st.sampled_from(["accounts", "cards"]),
    moments,
    st.integers(0, 7200),
)
survey_rows = st.builds(
    SurveyRow,
    st.one_of(st.none(), st.integers(1, 4)),
    st.one_of(st.none(), st.sampled_from(["accounts", "cards"])),
    moments,
    st.one_of(st.none(), st.integers(1, 5)),
    st.one_of(st.none(), st.integers(0, 10)),
)


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_percent_is_the_exact_value_rounded_half_even(part: int, extra: int) -> None:
    whole = part + extra
    value = percent(part, whole)
    assert value is not None and Decimal(0) <= value <= Decimal(100)
    exact = Decimal(100 * part) / Decimal(whole)  # 28 significant digits: no tie is lost
    assert abs(value - exact) <= Decimal("0.05")
    assert value == value.quantize(Decimal("0.1"))


@given(st.lists(contact_rows, max_size=40), st.lists(survey_rows, max_size=40))
def test_groups_add_up_to_the_total(contacts: list[ContactRow], surveys: list[SurveyRow]) -> None:
    report = compute(PERIOD, contacts, [], surveys)
    total = report.total
    inside = [c for c in contacts if PERIOD.contains(c.closed_at)]
    assert total.contacts == len(inside)
    for groups in (report.days, report.agents, report.skills):
        assert sum(t.contacts for t in groups.values()) == total.contacts
        assert sum(t.handle_us for t in groups.values()) == total.handle_us
    for field in ("csat_answers", "csat_satisfied", "nps_answers", "nps_promoters"):
        assert sum(getattr(t, field) for t in report.days.values()) == getattr(total, field)
    nps = total.nps
    assert nps is None or Decimal(-100) <= nps <= Decimal(100)
    if inside:
        mean = sum((c.closed_at - c.assigned_at).total_seconds() for c in inside if c.assigned_at)
        assert total.aht_s is not None
        assert abs(float(total.aht_s) - mean / len(inside)) <= 0.05 + 1e-9
