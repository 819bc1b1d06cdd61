"""Surveys are offered in the closing transaction, capped per customer, and invited by a
signed link after the delay, exactly once even with two schedulers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from audit.log import verify_database
from audit.models import AuditEvent
from tests.surveys.conftest import (
    Clock,
    People,
    add_endpoint,
    close_contact,
    close_existing,
    deliveries,
    survey_of,
)
from vbank.config import Settings
from vbank.db import Database
from vbank.surveys import links
from vbank.surveys.models import Survey
from vbank.surveys.scheduler import SurveyScheduler
from vbank.surveys.service import Surveys


async def _events(db: Database, type_: str) -> list[dict[str, object]]:
    async with db.sessions() as s:
        rows = (
            await s.scalars(
                select(AuditEvent.payload).where(AuditEvent.type == type_).order_by(AuditEvent.seq)
            )
        ).all()
    return [json.loads(p) for p in rows]


async def test_a_closed_contact_gets_a_survey_in_its_transaction(
    db: Database, surveys: Surveys, people: People
) -> None:
    cid = await close_contact(db, people.cust, people.ana)
    survey = await survey_of(db, cid)
    assert survey is not None
    assert (survey.state, survey.customer_id, survey.agent_id, survey.skill) == (
        "offered",
        people.cust,
        people.ana,
        "accounts",
    )
    assert survey.csat is None and survey.channel is None and survey.invited_at is None
    offered = await _events(db, "survey.offered")
    assert offered == [{"survey_id": survey.id, "contact_id": cid, "customer_id": people.cust}]
    async with db.sessions() as s:
        assert (await verify_database(s)).ok


async def test_a_failed_close_leaves_no_survey(
    db: Database, surveys: Surveys, people: People
) -> None:
    from audit.log import append

    cid = await close_contact(db, people.cust, people.ana, close=False)
    with pytest.raises(RuntimeError):
        async with db.transaction() as s:
            await append(s, "contact.closed", {"agent_id": people.ana}, session_ref=cid)
            assert await s.scalar(select(func.count()).select_from(Survey)) == 1
            raise RuntimeError("roll back")
    assert await survey_of(db, cid) is None
    await close_existing(db, cid, people.cust, people.ana)
    assert await survey_of(db, cid) is not None


async def test_no_survey_for_a_contact_that_never_reached_an_agent(
    db: Database, surveys: Surveys, people: People
) -> None:
    cid = await close_contact(db, people.cust, None, by="customer")
    assert await survey_of(db, cid) is None
    # and it does not use up the customer's survey for the fatigue window
    served = await close_contact(db, people.cust, people.ana)
    assert await survey_of(db, served) is not None


async def test_fatigue_cap_one_survey_per_window(
    db: Database, surveys: Surveys, people: People, clock: Clock
) -> None:
    first = await close_contact(db, people.cust, people.ana)
    second = await close_contact(db, people.cust, people.bob)
    other = await close_contact(db, people.other, people.ana)
    assert await survey_of(db, first) is not None
    assert await survey_of(db, second) is None  # within 30 days of the first
    assert await survey_of(db, other) is not None  # the cap is per customer
    clock.advance(days=29, hours=23)
    assert await survey_of(db, await close_contact(db, people.cust, people.ana)) is None
    clock.advance(hours=2)
    assert await survey_of(db, await close_contact(db, people.cust, people.ana)) is not None


async def test_fatigue_cap_zero_means_every_contact(
    db: Database, settings: Settings, people: People, clock: Clock
) -> None:
    import dataclasses

    service = Surveys(db, dataclasses.replace(settings, survey_fatigue_days=0), clock=clock)
    service.install()
    try:
        ids = [await close_contact(db, people.cust, people.ana) for _ in range(3)]
    finally:
        service.uninstall()
    assert all([await survey_of(db, cid) for cid in ids])
    # uninstalled: closes on this database no longer offer surveys
    assert await survey_of(db, await close_contact(db, people.cust, people.ana)) is None


async def test_invitation_after_the_delay_carries_a_working_link(
    db: Database, surveys: Surveys, people: People, clock: Clock, settings: Settings
) -> None:
    await add_endpoint(db, "survey.invited", "survey.completed")
    cid = await close_contact(db, people.cust, people.ana)
    assert await surveys.invite_due() == 0  # not yet: the page may still answer it
    assert await deliveries(db, "survey.invited") == []
    clock.advance(seconds=settings.survey_delay_s + 1)
    assert await surveys.invite_due() == 1
    assert await surveys.invite_due() == 0  # once
    survey = await survey_of(db, cid)
    assert survey is not None and survey.state == "invited" and survey.invited_at is not None

    [body] = await deliveries(db, "survey.invited")
    data = body["data"]
    assert body["type"] == "survey.invited"
    assert data["survey_id"] == survey.id and data["contact_id"] == cid
    assert data["customer_id"] == people.cust
    prefix = "https://bank.example/survey#t="
    assert data["url"].startswith(prefix)
    token = data["url"][len(prefix) :]
    claim = links.read_token(links.link_key(settings.secret_key), token, clock())
    assert isinstance(claim, links.LinkClaim) and claim.survey_id == survey.id
    assert abs(claim.expires_at - (clock() + timedelta(days=7))) < timedelta(seconds=2)
    assert (await surveys.by_link(token)).id == survey.id

    # the audit log has ids and the expiry, never the token
    [invited] = await _events(db, "survey.invited")
    assert invited["survey_id"] == survey.id and token not in json.dumps(invited)
    async with db.sessions() as s:
        payloads = (await s.scalars(select(AuditEvent.payload))).all()
    assert not any(token in p for p in payloads)


async def test_invitation_without_endpoints_still_marks_the_survey(
    db: Database, surveys: Surveys, people: People, clock: Clock, settings: Settings
) -> None:
    cid = await close_contact(db, people.cust, people.ana)
    clock.advance(seconds=settings.survey_delay_s + 1)
    assert await surveys.invite_due() == 1
    survey = await survey_of(db, cid)
    assert survey is not None and survey.state == "invited"


async def test_a_survey_answered_on_the_page_is_not_invited(
    db: Database, surveys: Surveys, people: People, clock: Clock, settings: Settings
) -> None:
    from vbank.surveys.service import Answer

    await add_endpoint(db, "survey.invited")
    cid = await close_contact(db, people.cust, people.ana)
    survey = await survey_of(db, cid)
    assert survey is not None
    await surveys.answer_on_page(people.cust, survey.id, Answer(5))
    clock.advance(seconds=settings.survey_delay_s + 1)
    assert await surveys.invite_due() == 0
    assert await deliveries(db, "survey.invited") == []


async def test_two_schedulers_invite_each_survey_once(
    db: Database, surveys: Surveys, people: People, clock: Clock, settings: Settings
) -> None:
    """Two processes (two databases handles, two services) race over the same due rows."""
    await add_endpoint(db, "survey.invited")
    for customer in (people.cust, people.other):
        await close_contact(db, customer, people.ana)
    clock.advance(seconds=settings.survey_delay_s + 1)
    other_db = Database(settings.database_url)
    try:
        twin = Surveys(other_db, settings, clock=clock)
        counts = await asyncio.gather(
            surveys.invite_due(), twin.invite_due(), surveys.invite_due(), twin.invite_due()
        )
    finally:
        await other_db.close()
    assert sum(counts) == 2
    sent = await deliveries(db, "survey.invited")
    assert len(sent) == 2 and len({d["data"]["survey_id"] for d in sent}) == 2
    assert len(await _events(db, "survey.invited")) == 2


async def test_stale_invitations_expire(
    db: Database, surveys: Surveys, people: People, clock: Clock, settings: Settings
) -> None:
    cid = await close_contact(db, people.cust, people.ana)
    clock.advance(seconds=settings.survey_delay_s + 1)
    await surveys.invite_due()
    assert await surveys.pending(people.cust, cid) is not None
    clock.advance(days=6)
    assert await surveys.expire_stale() == 0
    clock.advance(days=1, seconds=1)
    assert await surveys.pending(people.cust, cid) is None  # the page hides it at once
    assert await surveys.expire_stale() == 1
    survey = await survey_of(db, cid)
    assert survey is not None and survey.state == "expired"


async def test_the_scheduler_invites_on_its_own(
    db: Database, settings: Settings, people: People
) -> None:
    import dataclasses

    fast = dataclasses.replace(settings, survey_delay_s=0.2)
    scheduler = SurveyScheduler(Surveys(db, fast), interval_s=0.1)
    await scheduler.start()
    try:
        cid = await close_contact(db, people.cust, people.ana)
        for _ in range(100):
            survey = await survey_of(db, cid)
            if survey is not None and survey.state == "invited":
                break
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    assert survey is not None and survey.state == "invited"
    # stopped: no more surveys for this database
    assert await survey_of(db, await close_contact(db, people.other, people.ana)) is None
