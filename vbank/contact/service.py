"""Contacts as the service runs them: persisted in the database, routed by the in-memory
:class:`~vbank.contact.routing.Router`, every change audited in its own transaction.

The database is the truth; the router is rebuilt from it at start-up (queued contacts in
arrival order, assigned ones waiting for their agent to reconnect within the grace period).
Nothing here knows about websockets: callers get plain results and decide whom to tell.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.log import Actor, append
from vbank.contact.chat import ChatWriter, PostRefused, PostResult
from vbank.contact.models import ChatMessage, Contact, ContactRead, last_seq_of
from vbank.contact.routing import Assignment, Requeue, Router, RoutingError, RoutingErrorCode
from vbank.db import Database
from vbank.db import utc_or_none as _utc
from vbank.models import AgentProfile, User
from vbank.roles import Role

logger = logging.getLogger(__name__)

SKILLS = ("accounts", "cards", "wealth", "loans", "general")
MAX_HISTORY = 500


class ContactError(Exception):
    """A request about a contact that cannot be honoured; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Caller:
    """Who asks: user id and role (built from the signed-in principal)."""

    user_id: int
    role: Role

    @property
    def actor(self) -> Actor:
        return Actor(self.user_id, self.role.value)


@dataclass(frozen=True)
class ContactView:
    id: str
    customer_id: int
    agent_id: int | None
    skill: str
    state: str
    unread: int = 0


async def _last_seq(session: AsyncSession, contact_id: str) -> int:
    return await session.scalar(select(last_seq_of(contact_id))) or 0


def _view(c: Contact, unread: int = 0) -> ContactView:
    return ContactView(c.id, c.customer_id, c.agent_id, c.skill, c.state, unread)


class ContactService:
    """Starts, routes, transfers and closes contacts; reads chat history."""

    def __init__(
        self,
        db: Database,
        *,
        router: Router | None = None,
        grace_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        chat_in_process: bool = False,
    ) -> None:
        self.db = db
        self.router = router or Router(skills=SKILLS, rng=random.SystemRandom())
        self.grace_s = grace_s
        self.clock = clock
        self.chat = ChatWriter(db, in_process=chat_in_process)

    # ------------------------------------------------------------------ start-up

    async def restore(self) -> None:
        """Rebuild the router from the database after a (re)start."""
        async with self.db.sessions() as session:
            agents = {p.user_id: p for p in (await session.execute(select(AgentProfile))).scalars()}
            open_contacts = (
                (
                    await session.execute(
                        select(Contact).where(Contact.state != "closed").order_by(Contact.queued_at)
                    )
                )
                .scalars()
                .all()
            )
        now = self.clock()
        for c in open_contacts:
            queued_at = _utc(c.queued_at)
            assert queued_at is not None
            if c.state == "queued" or c.agent_id is None:
                self.router.enqueue(c.id, c.skill, queued_at.timestamp(), priority=c.priority)
            else:
                profile = agents.get(c.agent_id)
                agent_id = str(c.agent_id)
                if profile is not None and not self.router.has_agent(agent_id):
                    self.router.add_agent(
                        agent_id,
                        profile.skill_set & self.router.skills,
                        capacity=profile.capacity,
                        status="away",
                    )
                self.router.restore_assignment(
                    agent_id, c.id, c.skill, enqueued_at=queued_at.timestamp(), now=now
                )

    # ------------------------------------------------------------------ queries

    async def get(self, session: AsyncSession, contact_id: str) -> Contact:
        contact = await session.get(Contact, contact_id)
        if contact is None:
            raise ContactError("not_found", "no such contact")
        return contact

    async def participant(self, caller: Caller, contact_id: str) -> Contact:
        """The contact, if the caller takes part in it (else not_found: do not reveal it)."""
        async with self.db.reads() as session:
            return await self._participant(session, caller, contact_id)

    async def _participant(self, session: AsyncSession, caller: Caller, contact_id: str) -> Contact:
        contact = await self.get(session, contact_id)
        if caller.user_id not in (contact.customer_id, contact.agent_id):
            raise ContactError("not_found", "no such contact")
        return contact

    async def open_contacts(self, caller: Caller) -> list[ContactView]:
        """The caller's open contacts with unread counts."""
        column = Contact.customer_id if caller.role is Role.CUSTOMER else Contact.agent_id
        async with self.db.reads() as session:
            rows = (
                await session.execute(
                    select(Contact, last_seq_of(Contact.id), ContactRead.last_read_seq)
                    .outerjoin(
                        ContactRead,
                        (ContactRead.contact_id == Contact.id)
                        & (ContactRead.user_id == caller.user_id),
                    )
                    .where(column == caller.user_id, Contact.state != "closed")
                    .order_by(Contact.created_at)
                )
            ).all()
        return [_view(c, max(0, last - (read or 0))) for c, last, read in rows]

    async def history(
        self, caller: Caller, contact_id: str, after_seq: int = 0, limit: int = MAX_HISTORY
    ) -> list[ChatMessage]:
        async with self.db.reads() as session:  # one session: a reconnect storm runs many
            await self._participant(session, caller, contact_id)
            return list(
                (
                    await session.execute(
                        select(ChatMessage)
                        .where(ChatMessage.contact_id == contact_id, ChatMessage.seq > after_seq)
                        .order_by(ChatMessage.seq)
                        .limit(min(limit, MAX_HISTORY))
                    )
                ).scalars()
            )

    async def display_names(self, *user_ids: int) -> dict[int, str]:
        """Names to show for these users, in one query (``user N`` for an unknown id)."""
        async with self.db.reads() as session:
            rows = await session.execute(
                select(User.id, User.display_name).where(User.id.in_(user_ids))
            )
            found = {uid: name for uid, name in rows}
        return {uid: found.get(uid) or f"user {uid}" for uid in user_ids}

    # ------------------------------------------------------------------ customer actions

    async def start(self, caller: Caller, skill: str) -> ContactView:
        if caller.role is not Role.CUSTOMER:
            raise ContactError("forbidden", "only customers start contacts")
        if skill not in SKILLS:
            raise ContactError("invalid_message", f"unknown skill {skill!r}")
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            open_count = await session.scalar(
                select(func.count())
                .select_from(Contact)
                .where(Contact.customer_id == caller.user_id, Contact.state != "closed")
            )
            if open_count:
                raise ContactError("out_of_order", "you already have an open contact")
            contact = Contact(
                id=uuid.uuid4().hex,
                customer_id=caller.user_id,
                agent_id=None,
                skill=skill,
                state="queued",
                created_at=now,
                queued_at=now,
                priority=False,
            )
            session.add(contact)
            await session.flush()
            await append(
                session,
                "contact.queued",
                {"skill": skill},
                actor=caller.actor,
                session_ref=contact.id,
            )
        self.router.enqueue(contact.id, skill, now.timestamp())
        return _view(contact)

    def queue_position(self, contact_id: str) -> tuple[int, int] | None:
        """(position from 1, estimated wait in seconds) while queued, else None."""
        if not self.router.is_queued(contact_id):
            return None
        return self.router.position(contact_id), self.router.estimated_wait_s(contact_id)

    # ------------------------------------------------------------------ routing

    async def assign(self) -> list[ContactView]:
        """Route what can be routed now and persist it."""
        assignments: list[Assignment] = self.router.assign(self.clock())
        done: list[ContactView] = []
        for a in assignments:
            async with self.db.transaction() as session:
                contact = await self.get(session, a.contact_id)
                contact.state = "assigned"
                contact.agent_id = int(a.agent_id)
                contact.assigned_at = datetime.now(UTC)
                contact.priority = False
                await append(
                    session,
                    "contact.assigned",
                    {"agent_id": contact.agent_id, "skill": contact.skill},
                    session_ref=contact.id,
                )
            done.append(_view(contact))
        return done

    async def _requeue(self, requeues: list[Requeue], reason: str) -> list[ContactView]:
        out: list[ContactView] = []
        for r in requeues:
            async with self.db.transaction() as session:
                contact = await self.get(session, r.contact_id)
                previous = contact.agent_id
                contact.state = "queued"
                contact.agent_id = None
                contact.priority = True
                contact.queued_at = datetime.now(UTC)
                await append(
                    session,
                    "contact.requeued",
                    {"reason": reason, "previous_agent_id": previous, "skill": contact.skill},
                    session_ref=contact.id,
                )
            out.append(_view(contact))
        return out

    async def tick(self) -> list[ContactView]:
        """Requeue contacts whose agent has been gone longer than the grace period."""
        return await self._requeue(self.router.tick(self.clock(), self.grace_s), "agent_lost")

    # ------------------------------------------------------------------ agents

    def agent_online(self, agent_id: int) -> None:
        self.router.agent_connected(str(agent_id))

    def agent_offline(self, agent_id: int) -> None:
        self.router.agent_disconnected(str(agent_id), self.clock())

    async def set_agent_status(self, caller: Caller, status: str, capacity: int | None) -> None:
        if caller.role is not Role.AGENT:
            raise ContactError("forbidden", "only agents set an availability")
        try:
            self.router.set_status(str(caller.user_id), status, capacity)  # type: ignore[arg-type]
        except RoutingError as exc:
            raise ContactError(_routing_code(exc), exc.message) from None
        async with self.db.transaction() as session:
            if capacity is not None:
                profile = await session.get(AgentProfile, caller.user_id)
                if profile is not None:
                    profile.capacity = capacity
            await append(
                session,
                "agent.status",
                {"status": status, "capacity": capacity},
                actor=caller.actor,
            )

    async def transfer(
        self,
        caller: Caller,
        contact_id: str,
        *,
        to_agent_id: int | None = None,
        to_skill: str | None = None,
    ) -> ContactView:
        if caller.role is not Role.AGENT:
            raise ContactError("forbidden", "only agents transfer contacts")
        contact = await self.participant(caller, contact_id)
        if contact.state != "assigned" or contact.agent_id != caller.user_id:
            raise ContactError("forbidden", "only the contact's agent can transfer it")
        try:
            self.router.transfer(
                contact_id,
                by_agent=str(caller.user_id),
                to_agent=str(to_agent_id) if to_agent_id is not None else None,
                to_skill=to_skill,
                now=self.clock(),
            )
        except RoutingError as exc:
            raise ContactError(_routing_code(exc), exc.message) from None
        async with self.db.transaction() as session:
            row = await self.get(session, contact_id)
            if to_agent_id is not None:
                row.agent_id = to_agent_id
                row.assigned_at = datetime.now(UTC)
            else:
                assert to_skill is not None
                row.state = "queued"
                row.agent_id = None
                row.skill = to_skill
                row.priority = True
                row.queued_at = datetime.now(UTC)
            await append(
                session,
                "contact.transferred",
                {"from_agent_id": caller.user_id, "to_agent_id": to_agent_id, "to_skill": to_skill},
                actor=caller.actor,
                session_ref=contact_id,
            )
        return _view(row)

    # ------------------------------------------------------------------ both sides

    async def post(self, caller: Caller, contact_id: str, client_id: str, text: str) -> PostResult:
        """Store a chat line; who may post is checked in the same transaction as the write."""
        try:
            return await self.chat.post(
                contact_id, caller.user_id, caller.role.value, client_id, text
            )
        except PostRefused as exc:
            raise ContactError(exc.code, exc.message) from None

    async def mark_read(self, caller: Caller, contact_id: str, up_to_seq: int) -> None:
        await self.participant(caller, contact_id)
        async with self.db.transaction() as session:
            seq = min(up_to_seq, await _last_seq(session, contact_id))
            row = await session.get(ContactRead, (contact_id, caller.user_id))
            if row is None:
                session.add(
                    ContactRead(contact_id=contact_id, user_id=caller.user_id, last_read_seq=seq)
                )
            elif seq > row.last_read_seq:
                row.last_read_seq = seq

    async def close_contact(self, caller: Caller, contact_id: str) -> ContactView:
        contact = await self.participant(caller, contact_id)
        if contact.state == "closed":
            raise ContactError("out_of_order", "the contact is already closed")
        reason = caller.role.value
        async with self.db.transaction() as session:
            row = await self.get(session, contact_id)
            agent_id = row.agent_id
            row.state = "closed"
            row.closed_at = datetime.now(UTC)
            row.close_reason = reason
            await append(
                session,
                "contact.closed",
                {
                    "reason": reason,
                    "agent_id": agent_id,
                    "messages": await _last_seq(session, contact_id),
                },
                actor=caller.actor,
                session_ref=contact_id,
            )
        if agent_id is not None:
            self.router.release(str(agent_id), contact_id, self.clock())
        else:
            self.router.cancel(contact_id)
        return _view(row)


def _routing_code(exc: RoutingError) -> str:
    return {
        RoutingErrorCode.NOT_FOUND: "not_found",
        RoutingErrorCode.FORBIDDEN: "forbidden",
        RoutingErrorCode.UNKNOWN_SKILL: "invalid_message",
        RoutingErrorCode.INVALID: "invalid_message",
    }.get(exc.code, "forbidden")
