"""The dashboard API against the real app: contacts started, routed and closed through the
contact service, verification and survey rows, on SQLite or PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import MakeUser, signin
from tests.supervision.data import (
    add_survey,
    add_verification,
    agent_ready,
    handled_contact,
    queued_contact,
)
from vbank.contact.service import Caller, ContactService
from vbank.context import SERVICES
from vbank.roles import Role

Client = TestClient[Any, Any]


def service(app: web.Application) -> ContactService:
    return app[SERVICES].realtime.contacts


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), UTC)


async def as_supervisor(client: Client, make_user: MakeUser) -> None:
    await make_user("sam", Role.SUPERVISOR, display_name="Sam Supervisor")
    await signin(client, "sam")


async def test_overview_shows_queues_and_agent_states(
    client: Client, app: web.Application, make_user: MakeUser
) -> None:
    contacts = service(app)
    ana = await make_user("ana", Role.AGENT, display_name="Ana Agent", skills=("accounts",))
    bob = await make_user(
        "bob", Role.AGENT, display_name="Bob Agent", skills=("cards",), capacity=3
    )
    carol = await make_user("carol", Role.CUSTOMER, display_name="Carol Customer")
    dave = await make_user("dave", Role.CUSTOMER, display_name="Dave Customer")
    agent_ready(contacts, ana, ["accounts"])
    await queued_contact(contacts, carol, "cards")  # bob is not connected: it waits
    await queued_contact(contacts, dave, "accounts")
    await contacts.assign()  # dave's goes to ana
    await as_supervisor(client, make_user)

    resp = await client.get("/api/supervisor/overview")
    assert resp.status == 200
    text = await resp.text()
    assert "Carol" not in text and "Dave" not in text  # never a customer's name
    body = await resp.json()
    queues = {q["skill"]: q for q in body["queues"]}
    assert [q["skill"] for q in body["queues"]] == [
        "accounts",
        "cards",
        "wealth",
        "loans",
        "general",
    ]
    assert queues["cards"]["queued"] == 1
    assert 0 <= queues["cards"]["longest_wait_s"] < 30
    assert queues["cards"]["agents_available"] == 0
    assert (queues["accounts"]["queued"], queues["accounts"]["longest_wait_s"]) == (0, None)
    assert queues["accounts"]["agents_available"] == 1
    assert queues["accounts"]["free_slots"] == 1  # capacity 2, one contact
    agents = {a["agent_id"]: a for a in body["agents"]}
    assert agents[ana] == {
        "agent_id": ana,
        "name": "Ana Agent",
        "state": "available",
        "skills": ["accounts"],
        "load": 1,
        "capacity": 2,
    }
    assert (agents[bob]["state"], agents[bob]["load"], agents[bob]["capacity"]) == ("offline", 0, 3)

    # the agent steps away, the queued contact is cancelled: the next poll shows it
    contacts.router.set_status(str(ana), "away")
    cards_contact = contacts.router.queued("cards")[0].contact_id
    await contacts.close_contact(Caller(carol, Role.CUSTOMER), cards_contact)
    body = await (await client.get("/api/supervisor/overview")).json()
    assert {q["skill"]: q["queued"] for q in body["queues"]}["cards"] == 0
    assert {a["agent_id"]: a["state"] for a in body["agents"]}[ana] == "away"


async def test_stats_per_agent_skill_and_day(
    client: Client, app: web.Application, make_user: MakeUser
) -> None:
    contacts = service(app)
    db = app[SERVICES].db
    d1 = datetime.now(UTC).date() - timedelta(days=1)
    d2 = d1 - timedelta(days=1)
    ana = await make_user("ana", Role.AGENT, display_name="Ana Agent", skills=("accounts", "cards"))
    bob = await make_user("bob", Role.AGENT, display_name="Bob Agent", skills=("loans",))
    carol = await make_user("carol", Role.CUSTOMER, display_name="Carol Customer")
    agent_ready(contacts, ana, ["accounts", "cards"])
    agent_ready(contacts, bob, ["loans"])

    k1 = await handled_contact(
        contacts, carol, ana, "accounts", assigned_at=at(d1, 9), closed_at=at(d1, 9, 2)
    )
    k2 = await handled_contact(
        contacts, carol, ana, "cards", assigned_at=at(d1, 10), closed_at=at(d1, 10, 5)
    )
    k3 = await handled_contact(
        contacts, carol, ana, "accounts", assigned_at=at(d2, 11), closed_at=at(d2, 11, 1, 30)
    )
    k4 = await handled_contact(
        contacts, carol, bob, "loans", assigned_at=at(d1, 12), closed_at=at(d1, 12, 10)
    )
    # closed while still waiting (nobody serves wealth): not a handled contact
    k5 = await queued_contact(contacts, carol, "wealth")
    await contacts.close_contact(Caller(carol, Role.CUSTOMER), k5)
    # long ago: outside the period
    await handled_contact(
        contacts, carol, ana, "accounts", assigned_at=at(d2, 0) - timedelta(days=30),
        closed_at=at(d2, 0) - timedelta(days=30) + timedelta(seconds=5),
    )  # fmt: skip

    await add_verification(db, k1, carol, ana, "rejected", at(d1, 9, 0, 30))
    await add_verification(db, k1, carol, ana, "approved", at(d1, 9, 1))
    await add_verification(db, k4, carol, bob, "approved", at(d1, 12, 5))
    await add_verification(db, k3, carol, ana, None, at(d2, 11, 1))  # never decided

    await add_survey(db, k1, carol, ana, "accounts", at=at(d1, 13), csat=5, nps=9)
    await add_survey(db, k2, carol, ana, "cards", at=at(d1, 13), csat=2, nps=3)
    await add_survey(db, k3, carol, ana, "accounts", at=at(d2, 13), csat=4, nps=None)
    await add_survey(db, k4, carol, bob, "loans", at=at(d1, 13), csat=3, nps=10)
    await add_survey(
        db, k5, carol, None, "wealth", at=at(d1, 13), csat=None, nps=None, state="invited"
    )

    await as_supervisor(client, make_user)
    resp = await client.get(f"/api/supervisor/stats?from={d2}&to={d1}")
    assert resp.status == 200
    body = await resp.json()
    assert (body["from"], body["to"], body["timezone"]) == (str(d2), str(d1), "UTC")
    agents = {a["agent_id"]: a for a in body["agents"]}
    assert set(agents) == {ana, bob}
    assert agents[ana]["name"] == "Ana Agent"
    pick = ("contacts", "aht_s", "verify_rate", "csat_pct", "nps")

    def figures(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in pick)

    assert figures(agents[ana]) == (3, 170.0, 50.0, 66.7, 0.0)  # (120+300+90)/3 s
    assert figures(agents[bob]) == (1, 600.0, 100.0, 0.0, 100.0)
    skills = {s["skill"]: s for s in body["skills"]}
    assert figures(skills["accounts"]) == (2, 105.0, 50.0, 100.0, 100.0)
    assert figures(skills["cards"]) == (1, 300.0, None, 0.0, -100.0)
    assert figures(skills["loans"]) == (1, 600.0, 100.0, 0.0, 100.0)
    assert figures(skills["wealth"]) == (0, None, None, None, None)
    days = {d["day"]: d for d in body["days"]}
    assert list(days) == [str(d2), str(d1)]
    assert figures(days[str(d1)]) == (3, 340.0, 66.7, 33.3, 33.3)
    assert figures(days[str(d2)]) == (1, 90.0, None, 100.0, None)
    assert figures(body["total"]) == (4, 277.5, 66.7, 50.0, 33.3)
    assert (body["total"]["csat_answers"], body["total"]["nps_answers"]) == (4, 3)
    assert "Carol" not in await resp.text()


async def test_stats_default_to_the_last_seven_days(client: Client, make_user: MakeUser) -> None:
    await as_supervisor(client, make_user)
    body = await (await client.get("/api/supervisor/stats")).json()
    today = datetime.now(UTC).date()
    assert body["to"] in (str(today), str(today + timedelta(days=1)))  # midnight race
    assert len(body["days"]) == 7
    assert body["agents"] == [] and body["total"]["contacts"] == 0
    assert body["total"]["csat_pct"] is None


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-13-01",
        "from=2026-02-30&to=2026-03-01",
        "from=03/01/2026",
        "to=2026-03-01T10:00",
        "from=2026-03-05&to=2026-03-01",
        "from=2026-01-01&to=2026-04-03",
        "from=0000-01-01",
    ],
)
async def test_bad_periods_are_400_problems(
    client: Client, make_user: MakeUser, query: str
) -> None:
    await as_supervisor(client, make_user)
    resp = await client.get(f"/api/supervisor/stats?{query}")
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "invalid_request"


async def test_other_roles_are_refused(
    aiohttp_client: Any, app: web.Application, make_user: MakeUser
) -> None:
    for name, role in (("cust", Role.CUSTOMER), ("agnt", Role.AGENT), ("audi", Role.AUDITOR)):
        await make_user(name, role)
    for path in ("/api/supervisor/overview", "/api/supervisor/stats"):
        anonymous: Client = await aiohttp_client(app)
        assert (await anonymous.get(path)).status == 401
        for name in ("cust", "agnt", "audi"):
            client: Client = await aiohttp_client(app)
            await signin(client, name)
            resp = await client.get(path)
            assert resp.status == 403, (path, name)
            assert (await resp.json())["code"] == "forbidden"
            await client.close()
