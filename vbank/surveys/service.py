"""Surveys as the service runs them: offered when a contact closes, answered on the page
or through a signed link, invited by link after a delay, expired after the link's days.

Every change is one transaction with its audit event and, for ``survey.invited`` and
``survey.completed``, its webhook outbox row.  Audit payloads hold ids and scores only:
never the comment text and never a token.  Nothing here knows about HTTP.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from audit.log import SYSTEM, Actor, LoggedEvent, NewEvent, append, append_many_sync, subscribe
from vbank.config import Settings
from vbank.contact.models import Contact
from vbank.db import Database, async_url
from vbank.db import utc as aware
from vbank.surveys import links
from vbank.surveys.errors import SurveyError, changed_one
from vbank.surveys.followups import open_followup
from vbank.surveys.models import OPEN_SURVEY_STATES, Survey
from vbank.surveys.policy import SurveyPolicy, reached_agent
from vbank.webhooks.outbox import enqueue

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Answer:
    csat: int
    nps: int | None = None
    comment: str | None = None


# One Surveys per database: the audit listener is process-wide, so it finds the service
# of the database the closing transaction runs on (tests run several apps in turn).
_installed: dict[str, Surveys] = {}


def _db_key(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def on_contact_closed(session: Session, event: LoggedEvent) -> None:
    """Audit listener: runs inside the closing transaction, so the survey commits with it."""
    surveys = _installed.get(_db_key(session.get_bind().engine.url))
    if surveys is not None and event.session_ref is not None:
        surveys.offer(session, event.session_ref, json.loads(event.payload))


class Surveys:
    def __init__(self, db: Database, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.db = db
        self.settings = settings
        self.policy = SurveyPolicy.from_settings(settings)
        self.clock = clock
        self._key = links.link_key(settings.secret_key)
        self._db_key = _db_key(async_url(db.url))

    # ------------------------------------------------------------------ wiring

    def install(self) -> None:
        """Offer surveys for contacts closed on this database from now on."""
        _installed[self._db_key] = self
        subscribe(["contact.closed"], on_contact_closed)

    def uninstall(self) -> None:
        if _installed.get(self._db_key) is self:
            del _installed[self._db_key]

    # ------------------------------------------------------------------ offer

    def offer(self, session: Session, contact_id: str, closed: dict[str, Any]) -> Survey | None:
        """Create the contact's survey unless the contact never reached an agent or the
        customer was surveyed within the fatigue window.  The audit head is locked by the
        closing transaction, so two closes cannot both pass the fatigue check."""
        contact = session.get(Contact, contact_id)
        if contact is None or not reached_agent(contact.assigned_at):
            return None
        now = self.clock()
        recent = select(Survey.id).where(Survey.contact_id == contact_id)
        since = self.policy.fatigue_since(now)
        if since is not None:
            recent = select(Survey.id).where(
                (Survey.contact_id == contact_id)
                | ((Survey.customer_id == contact.customer_id) & (Survey.created_at > since))
            )
        if session.scalar(recent.limit(1)) is not None:
            logger.info("no survey for contact %s: fatigue cap", contact_id)
            return None
        agent_id = closed.get("agent_id")
        survey = Survey(
            id=uuid.uuid4().hex,
            contact_id=contact_id,
            customer_id=contact.customer_id,
            agent_id=agent_id if isinstance(agent_id, int) else contact.agent_id,
            skill=contact.skill,
            state="offered",
            created_at=now,
        )
        session.add(survey)
        session.flush()
        payload = {
            "survey_id": survey.id,
            "contact_id": contact_id,
            "customer_id": survey.customer_id,
        }
        append_many_sync(session, [NewEvent("survey.offered", payload)])
        return survey

    # ------------------------------------------------------------------ customer page

    async def pending(self, customer_id: int, contact_id: str | None = None) -> Survey | None:
        """The customer's newest open survey (of that contact, when named)."""
        query = select(Survey).where(
            Survey.customer_id == customer_id, Survey.state.in_(OPEN_SURVEY_STATES)
        )
        if contact_id is not None:
            query = query.where(Survey.contact_id == contact_id)
        async with self.db.sessions() as session:
            rows = (await session.scalars(query.order_by(Survey.created_at.desc()))).all()
        now = self.clock()
        for survey in rows:
            if self.policy.answerable(survey.state, survey.invited_at, now):
                return survey
        return None

    async def answer_on_page(self, customer_id: int, survey_id: str, answer: Answer) -> Survey:
        """The signed-in customer answers their own survey (someone else's is not found)."""
        async with self.db.transaction() as session:
            survey = await session.get(Survey, survey_id)
            if survey is None or survey.customer_id != customer_id:
                raise SurveyError("not_found", "no such survey")
            return await self._complete(
                session, survey, answer, "page", Actor(customer_id, "customer")
            )

    # ------------------------------------------------------------------ signed link

    def _claim(self, token: str) -> links.LinkClaim:
        claim = links.read_token(self._key, token, self.clock())
        if claim is links.TokenProblem.EXPIRED:
            raise SurveyError("link_expired", "this survey link has expired")
        if not isinstance(claim, links.LinkClaim):
            raise SurveyError("invalid_link", "this survey link is not valid")
        return claim

    async def _linked(self, session: AsyncSession, claim: links.LinkClaim) -> Survey:
        survey = await session.get(Survey, claim.survey_id)
        if survey is None or survey.invited_at is None:
            raise SurveyError("invalid_link", "this survey link is not valid")
        if survey.token_used_at is not None or survey.state == "completed":
            raise SurveyError("already_answered", "this survey has already been answered")
        if not self.policy.answerable(survey.state, survey.invited_at, self.clock()):
            raise SurveyError("link_expired", "this survey link has expired")
        return survey

    async def by_link(self, token: str) -> Survey:
        """The survey a link opens (read only: looking does not use the link up)."""
        claim = self._claim(token)
        async with self.db.sessions() as session:
            return await self._linked(session, claim)

    async def answer_by_link(self, token: str, answer: Answer) -> Survey:
        claim = self._claim(token)
        async with self.db.transaction() as session:
            survey = await self._linked(session, claim)
            return await self._complete(session, survey, answer, "link", SYSTEM)

    # ------------------------------------------------------------------ completion

    async def _complete(
        self, session: AsyncSession, survey: Survey, answer: Answer, channel: str, actor: Actor
    ) -> Survey:
        now = self.clock()
        if survey.state == "completed":
            raise SurveyError("already_answered", "this survey has already been answered")
        if not self.policy.answerable(survey.state, survey.invited_at, now):
            raise SurveyError("expired", "this survey has expired")
        values: dict[str, Any] = {
            "state": "completed",
            "completed_at": now,
            "csat": answer.csat,
            "nps": answer.nps,
            "comment": answer.comment,
            "channel": channel,
        }
        if channel == "link":
            values["token_used_at"] = now
        # conditional: of two answers racing (two tabs, page and link), one wins
        won = await changed_one(
            session,
            update(Survey)
            .where(
                Survey.id == survey.id,
                Survey.state.in_(OPEN_SURVEY_STATES),
                Survey.token_used_at.is_(None),
            )
            .values(**values),
        )
        if not won:
            raise SurveyError("already_answered", "this survey has already been answered")
        await session.refresh(survey)
        scores = {"csat": answer.csat, "nps": answer.nps}
        ids = {"survey_id": survey.id, "contact_id": survey.contact_id}
        await append(
            session, "survey.completed", {**ids, **scores, "channel": channel}, actor=actor
        )
        await enqueue(session, "survey.completed", {**ids, **scores})
        if self.policy.needs_followup(answer.csat):
            await open_followup(session, survey, self.policy.followup_due(now), now)
        return survey

    # ------------------------------------------------------------------ scheduler work

    async def invite_due(self, limit: int = 100) -> int:
        """Send the link for surveys still unanswered after the delay; returns how many.

        Each survey is flipped with ``UPDATE … WHERE state = 'offered'`` in its own
        transaction, with its audit event and outbox row: of two processes (or a process
        and the customer answering) exactly one changes the row, the other skips it.
        """
        now = self.clock()
        async with self.db.reads() as session:
            due: Sequence[str] = (
                await session.scalars(
                    select(Survey.id)
                    .where(
                        Survey.state == "offered",
                        Survey.created_at <= self.policy.invite_before(now),
                    )
                    .order_by(Survey.created_at)
                    .limit(limit)
                )
            ).all()
        invited = 0
        for survey_id in due:
            invited += await self._invite(survey_id)
        return invited

    async def _invite(self, survey_id: str) -> int:
        async with self.db.transaction() as session:
            now = self.clock()
            if not await changed_one(
                session,
                update(Survey)
                .where(Survey.id == survey_id, Survey.state == "offered")
                .values(state="invited", invited_at=now),
            ):
                return 0
            survey = (
                await session.execute(
                    select(Survey.contact_id, Survey.customer_id).where(Survey.id == survey_id)
                )
            ).one()
            expires = self.policy.link_expiry(now)
            url = links.link_url(self.settings, links.make_token(self._key, survey_id, expires))
            ids = {"survey_id": survey_id, "contact_id": survey.contact_id}
            await append(session, "survey.invited", {**ids, "expires_at": _iso(expires)})
            await enqueue(
                session,
                "survey.invited",
                {
                    **ids,
                    "customer_id": survey.customer_id,
                    "url": url,
                    "expires_at": _iso(expires),
                },
            )
        logger.info("survey %s invited by link", survey_id)
        return 1

    async def expire_stale(self, limit: int = 500) -> int:
        """Mark invited surveys whose link has run out as expired (dashboards count them)."""
        now = self.clock()
        cutoff = self.policy.links_expired_before(now)
        async with self.db.reads() as session:
            stale: Sequence[str] = (
                await session.scalars(
                    select(Survey.id)
                    .where(Survey.state == "invited", Survey.invited_at <= cutoff)
                    .limit(limit)
                )
            ).all()
        expired = 0
        for survey_id in stale:
            async with self.db.transaction() as session:
                if await changed_one(
                    session,
                    update(Survey)
                    .where(Survey.id == survey_id, Survey.state == "invited")
                    .values(state="expired"),
                ):
                    await append(session, "survey.expired", {"survey_id": survey_id})
                    expired += 1
        return expired


def _iso(ts: datetime) -> str:
    return aware(ts).isoformat().replace("+00:00", "Z")


def survey_view(survey: Survey) -> dict[str, Any]:
    """What the customer's page needs (no other person's data)."""
    return {
        "id": survey.id,
        "contact_id": survey.contact_id,
        "skill": survey.skill,
        "state": survey.state,
        "created_at": _iso(survey.created_at),
        "completed_at": _iso(survey.completed_at) if survey.completed_at else None,
    }
