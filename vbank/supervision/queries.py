"""Database reads of the dashboard: the agent directory and the rows the statistics count.

Only the columns the arithmetic needs are selected, filtered on the period's UTC edges, so
the pure functions in ``stats`` see plain rows and the database does the range scans.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import DateTime, Integer, String, column, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from vbank.contact.models import Contact
from vbank.identity.models import Verification
from vbank.models import AgentProfile, User
from vbank.roles import Role
from vbank.supervision.live import AgentEntry
from vbank.supervision.period import Period
from vbank.supervision.stats import ContactRow, SurveyRow, VerificationRow

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 2

# The surveys table belongs to vbank/surveys; a Core description of the columns read here
# keeps the dashboard independent of that package's ORM class.
SURVEYS = table(
    "surveys",
    column("agent_id", Integer),
    column("skill", String),
    column("state", String),
    column("completed_at", DateTime(timezone=True)),
    column("csat", Integer),
    column("nps", Integer),
)


@dataclass(frozen=True, slots=True)
class Rows:
    contacts: list[ContactRow]
    verifications: list[VerificationRow]
    surveys: list[SurveyRow]


async def agent_directory(session: AsyncSession) -> list[AgentEntry]:
    """Every enabled agent with skills and capacity from their profile."""
    result = await session.execute(
        select(User.id, User.display_name, AgentProfile.skills, AgentProfile.capacity)
        .outerjoin(AgentProfile, AgentProfile.user_id == User.id)
        .where(User.role == Role.AGENT.value, User.disabled.is_(False))
        .order_by(User.id)
    )
    return [
        AgentEntry(
            user_id,
            name,
            frozenset(s for s in (skills or "").split(",") if s),
            capacity or DEFAULT_CAPACITY,
        )
        for user_id, name, skills, capacity in result
    ]


async def display_names(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    result = await session.execute(select(User.id, User.display_name).where(User.id.in_(ids)))
    return {user_id: name for user_id, name in result}


async def load_rows(session: AsyncSession, period: Period) -> Rows:
    """Closed contacts, decided verifications and completed surveys of the period."""
    start, end = period.start_utc, period.end_utc
    contacts = await session.execute(
        select(Contact.agent_id, Contact.skill, Contact.assigned_at, Contact.closed_at).where(
            Contact.state == "closed",
            Contact.agent_id.is_not(None),
            Contact.closed_at >= start,
            Contact.closed_at < end,
        )
    )
    verifications = await session.execute(
        select(Verification.agent_id, Contact.skill, Verification.decided_at, Verification.decision)
        .join(Contact, Contact.id == Verification.contact_id)
        .where(
            Verification.decision.is_not(None),
            Verification.decided_at >= start,
            Verification.decided_at < end,
        )
    )
    surveys = await session.execute(
        select(
            SURVEYS.c.agent_id,
            SURVEYS.c.skill,
            SURVEYS.c.completed_at,
            SURVEYS.c.csat,
            SURVEYS.c.nps,
        ).where(
            SURVEYS.c.state == "completed",
            SURVEYS.c.completed_at >= start,
            SURVEYS.c.completed_at < end,
        )
    )
    return Rows(
        [ContactRow(a, s, assigned, closed) for a, s, assigned, closed in contacts if a and closed],
        [VerificationRow(a, s, at, d) for a, s, at, d in verifications if at and d],
        [SurveyRow(a, s, at, csat, nps) for a, s, at, csat, nps in surveys if at],
    )
