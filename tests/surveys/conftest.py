"""Survey fixtures: settings with survey knobs, a controllable clock, closed contacts made
the way the service makes them (the close appends ``contact.closed`` in its transaction)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from audit.log import Actor, append
from tests.conftest import MakeUser
from vbank.config import Settings
from vbank.contact.models import Contact
from vbank.db import Database
from vbank.http.survey_views import SURVEYS
from vbank.roles import Role
from vbank.surveys.models import Survey
from vbank.surveys.service import Surveys
from vbank.webhooks.models import WebhookDelivery, WebhookEndpoint


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        survey_fatigue_days=30,
        survey_delay_s=3600.0,  # the app's scheduler stays out of the way unless a test asks
        survey_link_days=7,
        followup_csat_max=2,
        followup_due_h=24,
        public_url="https://bank.example",
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def surveys(db: Database, settings: Settings, clock: Clock) -> AsyncIterator[Surveys]:
    """The survey service on the test database, offering surveys for closes from now on."""
    service = Surveys(db, settings, clock=clock)
    service.install()
    yield service
    service.uninstall()


@dataclasses.dataclass
class People:
    cust: int
    other: int
    ana: int  # accounts
    bob: int  # accounts
    carl: int  # cards only


@pytest.fixture
async def people(make_user: MakeUser) -> People:
    return People(
        cust=await make_user("cust", Role.CUSTOMER, display_name="Cathy Customer"),
        other=await make_user("otto", Role.CUSTOMER),
        ana=await make_user("ana", Role.AGENT, skills=("accounts",)),
        bob=await make_user("bob", Role.AGENT, skills=("accounts", "loans")),
        carl=await make_user("carl", Role.AGENT, skills=("cards",)),
    )


async def close_contact(
    db: Database,
    customer: int,
    agent: int | None,
    *,
    skill: str = "accounts",
    by: str = "agent",
    close: bool = True,
) -> str:
    """A contact that reached ``agent`` (or, with None, only the queue), then closed as
    ContactService.close_contact does: state, time and ``contact.closed`` in one transaction."""
    now = datetime.now(UTC)
    cid = uuid.uuid4().hex
    async with db.transaction() as s:
        s.add(
            Contact(
                id=cid,
                customer_id=customer,
                agent_id=agent,
                skill=skill,
                state="assigned" if agent else "queued",
                created_at=now,
                queued_at=now,
                assigned_at=now if agent else None,
                priority=False,
            )
        )
    if close:
        await close_existing(db, cid, customer, agent, by=by)
    return cid


async def close_existing(
    db: Database, cid: str, customer: int, agent: int | None, *, by: str = "agent"
) -> None:
    now = datetime.now(UTC)
    async with db.transaction() as s:
        row = await s.get(Contact, cid)
        assert row is not None
        row.state, row.closed_at, row.close_reason = "closed", now, by
        await append(
            s,
            "contact.closed",
            {"reason": by, "agent_id": agent, "messages": 0},
            actor=Actor(agent if by == "agent" else customer, by),
            session_ref=cid,
        )


async def survey_of(db: Database, contact_id: str) -> Survey | None:
    async with db.sessions() as s:
        found: Survey | None = await s.scalar(select(Survey).where(Survey.contact_id == contact_id))
        return found


async def add_endpoint(db: Database, *types: str) -> int:
    now = datetime.now(UTC)
    async with db.transaction() as s:
        ep = WebhookEndpoint(
            url="http://127.0.0.1:9/hook",
            event_types=",".join(sorted(types)),
            enabled=True,
            allow_private=True,
            created_at=now,
            updated_at=now,
        )
        s.add(ep)
        await s.flush()
        return ep.id


async def invite_now(app: web.Application, db: Database) -> str:
    """Run the app's invitation pass as if the delay had passed; the token of the newest
    link in the outbox (an endpoint must subscribe to ``survey.invited``)."""
    surveys = app[SURVEYS]
    real = surveys.clock
    surveys.clock = lambda: real() + timedelta(seconds=surveys.policy.delay_s + 1)
    try:
        assert await surveys.invite_due() == 1
    finally:
        surveys.clock = real
    url: str = (await deliveries(db, "survey.invited"))[-1]["data"]["url"]
    return url.split("#t=", 1)[1]


async def invited_survey(
    app: web.Application, db: Database, customer: int, agent: int
) -> tuple[Survey, str]:
    """A closed contact's survey, invited by link: (survey, token)."""
    await add_endpoint(db, "survey.invited", "survey.completed")
    cid = await close_contact(db, customer, agent)
    token = await invite_now(app, db)
    survey = await survey_of(db, cid)
    assert survey is not None
    return survey, token


async def deliveries(db: Database, event_type: str) -> list[dict[str, Any]]:
    import json

    async with db.sessions() as s:
        rows = (
            await s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.event_type == event_type)
                .order_by(WebhookDelivery.id)
            )
        ).all()
    return [json.loads(r.body) for r in rows]
