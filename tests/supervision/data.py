"""Dashboard test data made through the real contact service (start, route, close), then
dated: the service stamps ``now``, the statistics need known times and durations.
Verification and survey rows are written as their own services store them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update

from vbank.contact.models import Contact
from vbank.contact.service import Caller, ContactService
from vbank.db import Database
from vbank.identity.models import Verification
from vbank.roles import Role
from vbank.surveys.models import Survey


def agent_ready(
    contacts: ContactService, agent_id: int, skills: list[str], capacity: int = 2
) -> None:
    """What the websocket does when an agent connects and sets themselves available."""
    router = contacts.router
    if any(a.agent_id == str(agent_id) for a in router.agents()):
        router.set_status(str(agent_id), "available")
    else:
        router.add_agent(str(agent_id), skills, capacity=capacity, status="available")


async def queued_contact(contacts: ContactService, customer_id: int, skill: str) -> str:
    view = await contacts.start(Caller(customer_id, Role.CUSTOMER), skill)
    return view.id


async def handled_contact(
    contacts: ContactService,
    customer_id: int,
    agent_id: int,
    skill: str,
    *,
    assigned_at: datetime,
    closed_at: datetime,
) -> str:
    """A contact started by the customer, routed to the (ready) agent and closed by them."""
    contact_id = await queued_contact(contacts, customer_id, skill)
    assigned = await contacts.assign()
    assert [(v.id, v.agent_id) for v in assigned] == [(contact_id, agent_id)]
    await contacts.close_contact(Caller(agent_id, Role.AGENT), contact_id)
    async with contacts.db.transaction() as session:
        await session.execute(
            update(Contact)
            .where(Contact.id == contact_id)
            .values(assigned_at=assigned_at, closed_at=closed_at)
        )
    return contact_id


async def add_verification(
    db: Database,
    contact_id: str,
    customer_id: int,
    agent_id: int,
    decision: str | None,
    at: datetime,
) -> None:
    async with db.transaction() as session:
        session.add(
            Verification(
                id=uuid.uuid4().hex,
                contact_id=contact_id,
                customer_id=customer_id,
                agent_id=agent_id,
                reference_kind="on_file",
                reference_key="ref",
                challenge="blink",
                started_at=at,
                finished_at=at,
                state="finished",
                threshold=0.5,
                match=decision == "approved",
                liveness_passed=True,
                liveness_reasons="",
                good_frames=10,
                decision=decision,
                decided_at=at if decision else None,
            )
        )


async def add_survey(
    db: Database,
    contact_id: str,
    customer_id: int,
    agent_id: int | None,
    skill: str,
    *,
    at: datetime,
    csat: int | None,
    nps: int | None,
    state: str = "completed",
) -> None:
    """Complete (or write) the contact's survey; closing may already have offered one."""
    async with db.transaction() as session:
        survey = await session.scalar(select(Survey).where(Survey.contact_id == contact_id))
        if survey is None:
            survey = Survey(
                id=uuid.uuid4().hex,
                contact_id=contact_id,
                customer_id=customer_id,
                created_at=at,
            )
            session.add(survey)
        survey.agent_id = agent_id
        survey.skill = skill
        survey.state = state
        survey.completed_at = at if state == "completed" else None
        survey.csat = csat
        survey.nps = nps
        survey.channel = "page"
