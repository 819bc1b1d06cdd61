"""Survey rules as pure functions of settings and times (no I/O): who is asked, when the
link goes out, until when it works, and which scores call for a call-back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vbank.config import Settings
from vbank.db import utc as aware


@dataclass(frozen=True)
class SurveyPolicy:
    fatigue_days: int = 30
    delay_s: float = 600.0
    link_days: int = 7
    followup_csat_max: int = 2
    followup_due_h: int = 24

    @classmethod
    def from_settings(cls, settings: Settings) -> SurveyPolicy:
        return cls(
            fatigue_days=settings.survey_fatigue_days,
            delay_s=settings.survey_delay_s,
            link_days=settings.survey_link_days,
            followup_csat_max=settings.followup_csat_max,
            followup_due_h=settings.followup_due_h,
        )

    def fatigue_since(self, now: datetime) -> datetime | None:
        """A customer surveyed after this time is not asked again (None: no cap)."""
        return now - timedelta(days=self.fatigue_days) if self.fatigue_days > 0 else None

    def invite_before(self, now: datetime) -> datetime:
        """Surveys offered before this time and still unanswered get their link now."""
        return now - timedelta(seconds=self.delay_s)

    def link_expiry(self, invited_at: datetime) -> datetime:
        return aware(invited_at) + timedelta(days=self.link_days)

    def links_expired_before(self, now: datetime) -> datetime:
        """Surveys invited before this time have a dead link."""
        return now - timedelta(days=self.link_days)

    def answerable(self, state: str, invited_at: datetime | None, now: datetime) -> bool:
        """Open, and (once a link went out) not past the link's validity."""
        if state not in ("offered", "invited"):
            return False
        return invited_at is None or self.link_expiry(invited_at) > now

    def needs_followup(self, csat: int) -> bool:
        return csat <= self.followup_csat_max

    def followup_due(self, now: datetime) -> datetime:
        return now + timedelta(hours=self.followup_due_h)


def reached_agent(assigned_at: datetime | None) -> bool:
    """Only contacts an agent took are surveyed: a customer who gave up in the queue was
    not served, and asking them to rate the service would measure the queue, not it."""
    return assigned_at is not None
