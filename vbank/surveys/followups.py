"""Follow-up call tasks: opened by a low score, worked by agents with the contact's skill.

An agent sees the open tasks of their skills and the ones they claimed.  Claiming is a
conditional ``UPDATE … WHERE state = 'open'``, so of two agents racing exactly one gets
the task; only the claimer closes it, with an outcome.  Each change is audited in its
transaction (ids and the outcome code; the agent's note and the comment stay out).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Update, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit.log import Actor, append
from vbank.db import Database
from vbank.db import utc as aware
from vbank.models import AgentProfile, User
from vbank.surveys.errors import SurveyError, changed_one
from vbank.surveys.models import FollowupTask, Survey

logger = logging.getLogger(__name__)

MAX_LISTED = 200


async def open_followup(
    session: AsyncSession, survey: Survey, due_at: datetime, now: datetime
) -> FollowupTask:
    """Open the call-back task for a low-scored survey (in the survey's transaction)."""
    task = FollowupTask(
        id=uuid.uuid4().hex,
        survey_id=survey.id,
        contact_id=survey.contact_id,
        customer_id=survey.customer_id,
        skill=survey.skill,
        state="open",
        due_at=due_at,
        created_at=now,
    )
    session.add(task)
    await session.flush()
    await append(
        session,
        "followup.opened",
        {
            "task_id": task.id,
            "survey_id": survey.id,
            "contact_id": survey.contact_id,
            "skill": task.skill,
            "due_at": _iso(due_at),
        },
    )
    return task


def _iso(ts: datetime | None) -> str | None:
    return aware(ts).isoformat().replace("+00:00", "Z") if ts is not None else None


@dataclass(frozen=True)
class TaskView:
    """A task as its agent sees it: whom to call back and what they said."""

    task: FollowupTask
    customer_name: str
    csat: int | None
    nps: int | None
    comment: str | None

    def to_json(self, viewer_id: int) -> dict[str, Any]:
        t = self.task
        return {
            "id": t.id,
            "contact_id": t.contact_id,
            "customer_id": t.customer_id,
            "customer_name": self.customer_name,
            "skill": t.skill,
            "state": t.state,
            "due_at": _iso(t.due_at),
            "created_at": _iso(t.created_at),
            "claimed_by_me": t.claimed_by == viewer_id,
            "closed_at": _iso(t.closed_at),
            "outcome": t.outcome,
            "csat": self.csat,
            "nps": self.nps,
            "comment": self.comment,
        }


class Followups:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))

    async def _skills(self, session: AsyncSession, agent_id: int) -> frozenset[str]:
        profile = await session.get(AgentProfile, agent_id)
        return profile.skill_set if profile is not None else frozenset()

    async def _views(self, session: AsyncSession, *where: Any) -> list[TaskView]:
        rows = (
            await session.execute(
                select(FollowupTask, User.display_name, Survey.csat, Survey.nps, Survey.comment)
                .join(User, User.id == FollowupTask.customer_id)
                .join(Survey, Survey.id == FollowupTask.survey_id)
                .where(*where)
                .order_by(FollowupTask.due_at, FollowupTask.id)
                .limit(MAX_LISTED)
            )
        ).all()
        return [TaskView(t, name, csat, nps, comment) for t, name, csat, nps, comment in rows]

    async def for_agent(self, agent_id: int) -> list[TaskView]:
        """Open tasks of the agent's skills, and those the agent claimed and has not closed."""
        async with self.db.sessions() as session:
            skills = await self._skills(session, agent_id)
            if not skills:
                return []
            return await self._views(
                session,
                FollowupTask.skill.in_(sorted(skills)),
                or_(
                    FollowupTask.state == "open",
                    (FollowupTask.state == "claimed") & (FollowupTask.claimed_by == agent_id),
                ),
            )

    async def _one(self, session: AsyncSession, agent_id: int, task_id: str) -> TaskView:
        """The task if the agent may see it (another skill's task is simply not found)."""
        skills = await self._skills(session, agent_id)
        views = await self._views(
            session, FollowupTask.id == task_id, FollowupTask.skill.in_(sorted(skills))
        )
        if not views:
            raise SurveyError("not_found", "no such follow-up task")
        return views[0]

    async def _transition(
        self,
        session: AsyncSession,
        view: TaskView,
        agent_id: int,
        stmt: Update,
        event: str,
        refusal: SurveyError,
        **audited: str,
    ) -> TaskView:
        if not await changed_one(session, stmt):
            raise refusal
        await append(
            session,
            event,
            {"task_id": view.task.id, "contact_id": view.task.contact_id, **audited},
            actor=Actor(agent_id, "agent"),
        )
        await session.refresh(view.task)
        return view

    async def claim(self, agent_id: int, task_id: str) -> TaskView:
        async with self.db.transaction() as session:
            view = await self._one(session, agent_id, task_id)
            if view.task.state == "claimed" and view.task.claimed_by == agent_id:
                return view  # a repeated click: already yours
            return await self._transition(
                session,
                view,
                agent_id,
                update(FollowupTask)
                .where(FollowupTask.id == task_id, FollowupTask.state == "open")
                .values(state="claimed", claimed_by=agent_id, claimed_at=self.clock()),
                "followup.claimed",
                SurveyError("already_claimed", "another agent has this task"),
            )

    async def close(self, agent_id: int, task_id: str, outcome: str, note: str | None) -> TaskView:
        """Only the claimer closes; the outcome code is audited, the note is not."""
        async with self.db.transaction() as session:
            view = await self._one(session, agent_id, task_id)
            if view.task.state == "open":
                raise SurveyError("not_claimed", "claim the task before closing it")
            if view.task.claimed_by != agent_id:
                raise SurveyError("not_yours", "another agent has this task")
            return await self._transition(
                session,
                view,
                agent_id,
                update(FollowupTask)
                .where(
                    FollowupTask.id == task_id,
                    FollowupTask.state == "claimed",
                    FollowupTask.claimed_by == agent_id,
                )
                .values(state="closed", closed_at=self.clock(), outcome=outcome, note=note),
                "followup.closed",
                SurveyError("already_closed", "this task is already closed"),
                outcome=outcome,
            )
