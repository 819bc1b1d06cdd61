"""Contact-centre statistics from plain rows: contacts handled, average handle time,
verification pass rate, CSAT and NPS, per agent, per skill, per day and overall.

Pure functions, no database: ``queries`` loads the rows, tests feed hand-made ones.
Counting is in integers and every ratio is computed exactly (``Fraction``) and rounded once,
half to even, to one decimal, so a figure never drifts with float arithmetic and the
totals of the tables agree with each other.

Definitions (every row is counted on the local day of the moment named here):

* contacts handled: closed contacts that had an agent (``closed_at``); a contact closed while
  still queued was not handled;
* average handle time: mean of ``closed_at - assigned_at`` over those contacts (seconds);
* verification pass rate: approved / decided attempts (``decided_at``);
* CSAT %: answers 4-5 / answered surveys (``completed_at``);
* NPS: % promoters (9-10) minus % detractors (0-6) among surveys with an NPS answer,
  computed from the counts (not from two rounded percentages), from -100 to 100.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final, TypeVar

from vbank.supervision.period import Period

CSAT_SATISFIED: Final = 4  # 4 and 5 of 1..5 count as satisfied
NPS_PROMOTER: Final = 9  # 9..10
NPS_DETRACTOR: Final = 6  # 0..6
APPROVED: Final = "approved"

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ContactRow:
    """A closed contact that an agent held."""

    agent_id: int
    skill: str
    assigned_at: datetime | None
    closed_at: datetime


@dataclass(frozen=True, slots=True)
class VerificationRow:
    """A decided verification attempt (``skill`` is its contact's)."""

    agent_id: int
    skill: str
    decided_at: datetime
    decision: str


@dataclass(frozen=True, slots=True)
class SurveyRow:
    """A completed survey; answers may be missing."""

    agent_id: int | None
    skill: str | None
    completed_at: datetime
    csat: int | None
    nps: int | None


def tenths(numerator: int, denominator: int) -> Decimal:
    """``numerator / denominator`` rounded half to even to one decimal, exactly."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    scaled = round(Fraction(numerator * 10, denominator))  # Fraction rounds half to even
    return Decimal(scaled).scaleb(-1)


def percent(part: int, whole: int) -> Decimal | None:
    """``100 · part / whole`` to one decimal, ``None`` when there is nothing to divide."""
    return None if whole == 0 else tenths(100 * part, whole)


def nps_score(promoters: int, detractors: int, answers: int) -> Decimal | None:
    """Net promoter score to one decimal, ``None`` without answers."""
    return None if answers == 0 else tenths(100 * (promoters - detractors), answers)


@dataclass(slots=True)
class Tally:
    """Integer counters of one group (an agent, a skill, a day, or everything)."""

    contacts: int = 0
    handled_timed: int = 0  # contacts with an assignment time (the AHT denominator)
    handle_us: int = 0  # summed handle time, microseconds
    verify_decided: int = 0
    verify_approved: int = 0
    csat_answers: int = 0
    csat_satisfied: int = 0
    nps_answers: int = 0
    nps_promoters: int = 0
    nps_detractors: int = 0

    def add_contact(self, row: ContactRow) -> None:
        self.contacts += 1
        if row.assigned_at is not None:
            delta = row.closed_at - row.assigned_at
            # Microseconds in integers; a clock step backwards must not make time negative.
            micros = (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds
            self.handle_us += max(0, micros)
            self.handled_timed += 1

    def add_verification(self, row: VerificationRow) -> None:
        self.verify_decided += 1
        self.verify_approved += row.decision == APPROVED

    def add_survey(self, row: SurveyRow) -> None:
        if row.csat is not None:
            self.csat_answers += 1
            self.csat_satisfied += row.csat >= CSAT_SATISFIED
        if row.nps is not None:
            self.nps_answers += 1
            self.nps_promoters += row.nps >= NPS_PROMOTER
            self.nps_detractors += row.nps <= NPS_DETRACTOR

    @property
    def aht_s(self) -> Decimal | None:
        """Average handle time in seconds, one decimal."""
        if self.handled_timed == 0:
            return None
        return tenths(self.handle_us, self.handled_timed * 10**6)

    @property
    def verify_rate(self) -> Decimal | None:
        return percent(self.verify_approved, self.verify_decided)

    @property
    def csat_pct(self) -> Decimal | None:
        return percent(self.csat_satisfied, self.csat_answers)

    @property
    def nps(self) -> Decimal | None:
        return nps_score(self.nps_promoters, self.nps_detractors, self.nps_answers)

    def metrics(self) -> dict[str, Any]:
        """JSON-ready figures (decimals as numbers with one decimal)."""
        return {
            "contacts": self.contacts,
            "aht_s": _number(self.aht_s),
            "verify_decided": self.verify_decided,
            "verify_approved": self.verify_approved,
            "verify_rate": _number(self.verify_rate),
            "csat_answers": self.csat_answers,
            "csat_pct": _number(self.csat_pct),
            "nps_answers": self.nps_answers,
            "nps": _number(self.nps),
        }


def _number(value: Decimal | None) -> float | None:
    # A one-decimal Decimal converts to the float whose shortest repr is that same decimal,
    # so JSON shows exactly "66.7".
    return None if value is None else float(value)


@dataclass(slots=True)
class Report:
    """Tallies of one period; ``days`` holds every day of the period, even empty ones."""

    period: Period
    total: Tally = field(default_factory=Tally)
    agents: dict[int, Tally] = field(default_factory=dict)
    skills: dict[str, Tally] = field(default_factory=dict)
    days: dict[date, Tally] = field(default_factory=dict)

    def groups_for(self, agent_id: int | None, skill: str | None, day: date) -> list[Tally]:
        """Every tally a row of this agent, skill and day counts in."""
        groups = [self.total, self.days[day]]
        if agent_id is not None:
            groups.append(_group(self.agents, agent_id))
        if skill is not None:
            groups.append(_group(self.skills, skill))
        return groups


def _group(groups: dict[K, Tally], key: K) -> Tally:
    tally = groups.get(key)
    if tally is None:
        tally = groups[key] = Tally()
    return tally


def compute(
    period: Period,
    contacts: Iterable[ContactRow],
    verifications: Iterable[VerificationRow],
    surveys: Iterable[SurveyRow],
    *,
    skills: Iterable[str] = (),
) -> Report:
    """Tally the rows that fall in ``period``; ``skills`` are listed even when empty."""
    report = Report(period, days={day: Tally() for day in period.each_day()})
    for skill in skills:
        _group(report.skills, skill)
    for c in contacts:
        if (day := period.day_in(c.closed_at)) is not None:
            for tally in report.groups_for(c.agent_id, c.skill, day):
                tally.add_contact(c)
    for v in verifications:
        if (day := period.day_in(v.decided_at)) is not None:
            for tally in report.groups_for(v.agent_id, v.skill, day):
                tally.add_verification(v)
    for s in surveys:
        if (day := period.day_in(s.completed_at)) is not None:
            for tally in report.groups_for(s.agent_id, s.skill, day):
                tally.add_survey(s)
    return report
