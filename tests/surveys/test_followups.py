"""Low scores open follow-up call tasks for agents with the contact's skill; one agent
claims a task, only that agent closes it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from audit.models import AuditEvent
from tests.conftest import signin
from tests.surveys.conftest import People, close_contact, survey_of
from vbank.db import Database
from vbank.surveys.models import FollowupTask

Client = TestClient[Any, Any]


@pytest.fixture
async def server(aiohttp_server: Any, app: web.Application) -> TestServer:
    srv: TestServer = await aiohttp_server(app)
    return srv


class Agent:
    def __init__(self, client: Client, csrf: str) -> None:
        self.client = client
        self.headers = {"X-CSRF-Token": csrf}

    async def tasks(self) -> list[dict[str, Any]]:
        resp = await self.client.get("/api/followups")
        assert resp.status == 200
        tasks: list[dict[str, Any]] = (await resp.json())["tasks"]
        return tasks

    async def claim(self, task_id: str) -> Any:
        return await self.client.post(f"/api/followups/{task_id}/claim", headers=self.headers)

    async def close(self, task_id: str, **body: Any) -> Any:
        return await self.client.post(
            f"/api/followups/{task_id}/close", json=body, headers=self.headers
        )


@pytest.fixture
def as_user(aiohttp_client: Any, server: TestServer) -> Any:
    async def make(username: str) -> Agent:
        client: Client = await aiohttp_client(server)
        return Agent(client, await signin(client, username))

    return make


async def _answer(as_user: Any, db: Database, people: People, csat: int, **extra: Any) -> str:
    """A contact of Cathy with Ana (accounts) closes; Cathy answers on the page."""
    cid = await close_contact(db, people.cust, people.ana)
    survey = await survey_of(db, cid)
    assert survey is not None
    cust = await as_user("cust")
    resp = await cust.client.post(
        f"/api/surveys/{survey.id}", json={"csat": csat, **extra}, headers=cust.headers
    )
    assert resp.status == 200, await resp.text()
    return cid


async def _tasks(db: Database) -> list[FollowupTask]:
    async with db.sessions() as s:
        return list((await s.scalars(select(FollowupTask))).all())


async def test_low_score_opens_a_task_for_the_skill_only(
    as_user: Any, db: Database, people: People
) -> None:
    before = datetime.now(UTC)
    cid = await _answer(as_user, db, people, 1, nps=2, comment="Nobody solved my card issue")
    [task] = await _tasks(db)
    assert (task.contact_id, task.customer_id, task.skill, task.state) == (
        cid,
        people.cust,
        "accounts",
        "open",
    )
    due = task.due_at if task.due_at.tzinfo else task.due_at.replace(tzinfo=UTC)
    assert before + timedelta(hours=24) <= due <= datetime.now(UTC) + timedelta(hours=24)

    ana, bob, carl = [await as_user(n) for n in ("ana", "bob", "carl")]
    [seen] = await ana.tasks()
    assert seen["id"] == task.id and seen["customer_name"] == "Cathy Customer"
    assert (seen["csat"], seen["nps"], seen["comment"]) == (1, 2, "Nobody solved my card issue")
    assert seen["state"] == "open" and seen["claimed_by_me"] is False
    assert [t["id"] for t in await bob.tasks()] == [task.id]  # accounts + loans
    assert await carl.tasks() == []  # cards only: not for them
    resp = await carl.claim(task.id)
    assert resp.status == 404  # not even revealed
    resp = await carl.close(task.id, outcome="reached")
    assert resp.status == 404


@pytest.mark.parametrize(("csat", "opens"), [(2, True), (3, False), (5, False)])
async def test_threshold(
    as_user: Any, db: Database, people: People, csat: int, opens: bool
) -> None:
    await _answer(as_user, db, people, csat)
    assert len(await _tasks(db)) == (1 if opens else 0)


async def test_claim_race_one_agent_wins_and_only_they_close(
    as_user: Any, db: Database, people: People
) -> None:
    await _answer(as_user, db, people, 1)
    [task] = await _tasks(db)
    ana, bob = await as_user("ana"), await as_user("bob")
    first, second = await asyncio.gather(ana.claim(task.id), bob.claim(task.id))
    statuses = sorted([first.status, second.status])
    assert statuses == [200, 409], statuses
    winner, loser = (ana, bob) if first.status == 200 else (bob, ana)
    loser_resp = second if first.status == 200 else first
    assert (await loser_resp.json())["code"] == "already_claimed"
    claimed = await (first if first.status == 200 else second).json()
    assert claimed["task"]["state"] == "claimed" and claimed["task"]["claimed_by_me"] is True

    # the loser no longer sees it; the winner does, as theirs
    assert await loser.tasks() == []
    [mine] = await winner.tasks()
    assert mine["claimed_by_me"] is True
    assert (await winner.claim(task.id)).status == 200  # a repeated click is harmless

    refused = await loser.close(task.id, outcome="reached")
    assert refused.status == 403 and (await refused.json())["code"] == "not_yours"
    bad = await winner.close(task.id, outcome="hung_up")
    assert bad.status == 400
    long_note = await winner.close(task.id, outcome="reached", note="x" * 501)
    assert long_note.status == 400
    ok = await winner.close(task.id, outcome="resolved", note="Card reissued, customer happy")
    assert ok.status == 200, await ok.text()
    assert (await ok.json())["task"]["state"] == "closed"
    again = await winner.close(task.id, outcome="other")
    assert again.status == 409
    assert await winner.tasks() == [] and await loser.tasks() == []

    [row] = await _tasks(db)
    assert (row.state, row.outcome, row.note) == (
        "closed",
        "resolved",
        "Card reissued, customer happy",
    )
    assert row.claimed_at is not None and row.closed_at is not None
    async with db.sessions() as s:
        events = (
            await s.execute(
                select(AuditEvent.type, AuditEvent.actor_id, AuditEvent.payload)
                .where(AuditEvent.type.like("followup.%"))
                .order_by(AuditEvent.seq)
            )
        ).all()
    assert [e.type for e in events] == ["followup.opened", "followup.claimed", "followup.closed"]
    winner_id = people.ana if winner is ana else people.bob
    assert events[1].actor_id == winner_id and events[2].actor_id == winner_id
    assert json.loads(events[2].payload)["outcome"] == "resolved"
    assert not any("reissued" in e.payload for e in events)


async def test_closing_needs_a_claim(as_user: Any, db: Database, people: People) -> None:
    await _answer(as_user, db, people, 2)
    [task] = await _tasks(db)
    ana = await as_user("ana")
    resp = await ana.close(task.id, outcome="no_answer")
    assert resp.status == 409 and (await resp.json())["code"] == "not_claimed"


async def test_followup_routes_are_for_agents(as_user: Any, db: Database, people: People) -> None:
    await _answer(as_user, db, people, 1)
    [task] = await _tasks(db)
    cust = await as_user("cust")
    assert (await cust.client.get("/api/followups")).status == 403
    assert (await cust.claim(task.id)).status == 403
    ana = await as_user("ana")
    resp = await ana.client.post(
        f"/api/surveys/{task.survey_id}", json={"csat": 5}, headers=ana.headers
    )
    assert resp.status == 403  # agents do not answer surveys
    no_csrf = await ana.client.post(f"/api/followups/{task.id}/claim")
    assert no_csrf.status == 403 and (await no_csrf.json())["code"] == "csrf_failed"
