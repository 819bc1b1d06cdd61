"""The reporting period of the statistics: validated calendar days in the bank's time zone.

Days are whole local days (``VBANK_STATS_TZ``), both ends inclusive, so "today" means the
same thing to a supervisor in Shanghai as on the charts; the database is queried with the
UTC instants of the period's edges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final

DEFAULT_DAYS: Final = 7
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class PeriodError(ValueError):
    """A ``from``/``to`` pair that cannot be a reporting period; the message says why."""


@dataclass(frozen=True, slots=True)
class Period:
    """Local calendar days ``first``..``last`` (inclusive) in ``tz``."""

    first: date
    last: date
    tz: tzinfo

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def each_day(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range(self.days)]

    @property
    def start_utc(self) -> datetime:
        """The first instant of the period."""
        return datetime.combine(self.first, time(0), self.tz).astimezone(UTC)

    @property
    def end_utc(self) -> datetime:
        """The first instant after the period (exclusive bound)."""
        return datetime.combine(self.last + timedelta(days=1), time(0), self.tz).astimezone(UTC)

    def day_of(self, moment: datetime) -> date:
        """The local day of an instant (naive datetimes are UTC, as SQLite returns them)."""
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return aware.astimezone(self.tz).date()

    def contains(self, moment: datetime) -> bool:
        return self.day_in(moment) is not None

    def day_in(self, moment: datetime) -> date | None:
        """The local day of ``moment`` if it lies in the period, else ``None``."""
        day = self.day_of(moment)
        return day if self.first <= day <= self.last else None


def _parse_day(text: str, name: str) -> date:
    if not _DATE_RE.fullmatch(text):
        raise PeriodError(f"{name} must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"{name} is not a calendar date") from None


def parse_period(
    first: str | None, last: str | None, *, today: date, tz: tzinfo, max_days: int
) -> Period:
    """Validate the query's ``from``/``to``; missing ends default to the last seven days.

    ``to`` alone gives the seven days ending there, ``from`` alone runs up to today.
    """
    end = _parse_day(last, "to") if last else None
    start = _parse_day(first, "from") if first else None
    if end is None:
        end = today if start is None or start <= today else start
    if start is None:
        start = end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise PeriodError("from must not be after to")
    period = Period(start, end, tz)
    if period.days > max_days:
        raise PeriodError(f"the period is longer than {max_days} days")
    return period
