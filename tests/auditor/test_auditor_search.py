"""Searching contacts as an auditor: filters, paging, validation, roles, and the search's
own audit event."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, event

from tests.auditor.conftest import T0, People, Seeder, events_of, signed_client
from vbank.db import Database


async def _ids(client: TestClient[Any, Any], **params: str) -> list[str]:
    resp = await client.get("/api/auditor/sessions", params=params)
    assert resp.status == 200, await resp.text()
    return [row["contact_id"] for row in (await resp.json())["sessions"]]


async def test_filters_by_customer_agent_dates_and_outcome(
    auditor: TestClient[Any, Any], people: People, seed: Seeder
) -> None:
    day = timedelta(days=1)
    k1 = await seed.contact(
        people.kate,
        people.ana,
        created_at=T0,
        messages=(("customer", "hello"), ("agent", "hi Kate")),
        verified=True,
    )
    k2 = await seed.contact(people.kate, people.bob, created_at=T0 + day)
    c1 = await seed.contact(people.carl, people.ana, created_at=T0 + 2 * day, closed=False)
    c2 = await seed.contact(
        people.carl,
        people.bob,
        created_at=T0 + 3 * day,
        events=(("transaction.executed", {"amount_minor": 100}, people.bob, "agent"),),
    )
    await seed.verification(k2, people.kate, people.bob, decision="rejected")
    await seed.recording(k1, b"x" * 10)
    await seed.recording(k1, b"y" * 10, side="agent")

    assert await _ids(auditor) == [c2, c1, k2, k1]  # newest first
    assert await _ids(auditor, customer="kate") == [k2, k1]
    assert await _ids(auditor, customer="KATE") == [k2, k1]
    assert await _ids(auditor, customer=str(people.carl)) == [c2, c1]
    assert await _ids(auditor, customer="nobody") == []
    assert await _ids(auditor, customer="ana") == []  # an agent is not a customer
    assert await _ids(auditor, agent="ana") == [c1, k1]
    assert await _ids(auditor, agent=str(people.bob)) == [c2, k2]
    assert await _ids(auditor, customer="kate", agent="bob") == [k2]
    # dates: a bare `to` date includes that whole day; date-times are exact bounds
    assert await _ids(auditor, **{"from": "2026-03-11", "to": "2026-03-12"}) == [c1, k2]
    assert await _ids(auditor, **{"from": "2026-03-12T09:00:00Z"}) == [c2, c1]
    assert await _ids(auditor, to="2026-03-11T09:00:00+00:00") == [k1]
    assert await _ids(auditor, **{"from": "2026-03-11T17:00:00+08:00"}) == [c2, c1, k2]
    assert await _ids(auditor, outcome="verified") == [k1]
    assert await _ids(auditor, outcome="rejected") == [k2]
    assert await _ids(auditor, outcome="transaction_executed") == [c2]
    assert await _ids(auditor, outcome="open") == [c1]
    assert await _ids(auditor, outcome="closed") == [c2, k2, k1]

    resp = await auditor.get("/api/auditor/sessions", params={"customer": "kate"})
    rows = {row["contact_id"]: row for row in (await resp.json())["sessions"]}
    first = rows[k1]
    assert first["customer"] == {"id": people.kate, "name": "Kate Hill", "username": "kate"}
    assert first["agent"] == {"id": people.ana, "name": "Ana Agent"}
    assert first["skill"] == "accounts"
    assert first["state"] == "closed"
    assert first["created_at"].startswith("2026-03-10T09:00:00")
    assert first["closed_at"].startswith("2026-03-10T09:10:00")
    assert first["verified_at"] is not None
    assert (first["messages"], first["recordings"], first["verifications"]) == (2, 2, 0)
    assert rows[k2]["verified_at"] is None and rows[k2]["verifications"] == 1


async def test_agent_search_finds_contacts_the_agent_handed_on(
    auditor: TestClient[Any, Any], people: People, seed: Seeder
) -> None:
    """Ana chatted, then transferred to Bob: the contact is Bob's now but Ana's too."""
    cid = await seed.contact(
        people.kate,
        people.bob,
        events=(
            (
                "contact.transferred",
                {"from_agent_id": people.ana, "to_agent_id": people.bob},
                people.ana,
                "agent",
            ),
        ),
    )
    assert await _ids(auditor, agent="ana") == [cid]
    assert await _ids(auditor, agent="bob") == [cid]


async def test_searches_reach_the_audit_log_through_its_indexes(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, db: Database
) -> None:
    """The log grows by one event per chat line and has no actor index (it cost a page
    write per line): every search that reads it must still find its rows by an index,
    never by scanning the log. Checked on the plans of the statements the searches ran."""
    cid = await seed.contact(
        people.kate,
        people.bob,
        messages=(("customer", "hello"), ("agent", "hi")),
        events=(("transaction.executed", {"amount_minor": 100}, people.bob, "agent"),),
    )
    ran: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "audit_events" in statement and statement.lstrip().upper().startswith("SELECT"):
            ran.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", grab)
    try:
        assert await _ids(auditor, agent="ana") == []
        assert await _ids(auditor, agent="bob") == [cid]
        assert await _ids(auditor, outcome="transaction_executed") == [cid]
        assert await _ids(auditor, customer="kate") == [cid]
    finally:
        event.remove(Engine, "before_cursor_execute", grab)
    assert len(ran) >= 4, ran
    async with db.engine.connect() as conn:
        if not db.is_sqlite:
            await conn.exec_driver_sql("SET enable_seqscan = off")  # an index if any fits
        for statement, parameters in ran:
            if db.is_sqlite:
                plan = [
                    r[-1]
                    for r in await conn.exec_driver_sql(
                        f"EXPLAIN QUERY PLAN {statement}", parameters
                    )
                ]
                scans = [line for line in plan if line.startswith("SCAN audit_events")]
            else:
                plan = [
                    r[0] for r in await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
                ]
                scans = [line for line in plan if "Seq Scan on audit_events" in line]
            assert scans == [], (statement, plan)


async def test_paging_with_a_cursor(
    auditor: TestClient[Any, Any], people: People, seed: Seeder
) -> None:
    made = [
        await seed.contact(people.kate, people.ana, created_at=T0 + timedelta(hours=i))
        for i in range(5)
    ]
    # two contacts at the very same instant are still paged without loss or repeat
    made.append(await seed.contact(people.carl, people.ana, created_at=T0 + timedelta(hours=4)))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        resp = await auditor.get("/api/auditor/sessions", params=params)
        body = await resp.json()
        assert len(body["sessions"]) <= 2
        seen += [row["contact_id"] for row in body["sessions"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(made) and len(set(seen)) == 6
    assert seen[-1] == made[0]  # oldest last


async def test_bad_parameters_are_400_problems(auditor: TestClient[Any, Any]) -> None:
    for params in (
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"outcome": "maybe"},
        {"from": "yesterday"},
        {"to": "2026-13-01"},
        {"cursor": "not-a-cursor"},
        {"customer": "x" * 65},
        {"to": "9999-12-31"},
        {"limit": "١٠"},
    ):
        resp = await auditor.get("/api/auditor/sessions", params=params)
        assert resp.status == 400, params
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["code"] == "invalid_request"
    for params in ({"limit": "100"}, {"customer": "²"}, {"agent": "99999999999999"}):
        resp = await auditor.get("/api/auditor/sessions", params=params)
        assert resp.status == 200, params


async def test_every_search_is_audited(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, db: Database
) -> None:
    await seed.contact(people.kate, people.ana)
    await auditor.get("/api/auditor/sessions", params={"customer": "kate", "outcome": "closed"})
    [event] = await events_of(db, None, "auditor.viewed")
    assert (event.actor_id, event.actor_role) == (people.auditor, "auditor")
    payload = json.loads(event.payload)
    assert payload == {
        "what": "search",
        "filters": {"customer": "kate", "outcome": "closed"},
        "results": 1,
        "page": False,
    }


async def test_only_auditors_may_search(
    aiohttp_client: Any, app: web.Application, people: People, seed: Seeder, db: Database
) -> None:
    await seed.contact(people.kate, people.ana)
    for username in ("ana", "kate"):
        client = await signed_client(aiohttp_client, app, username)
        resp = await client.get("/api/auditor/sessions")
        assert resp.status == 403
        assert (await resp.json())["code"] == "forbidden"
        page = await client.get("/auditor", allow_redirects=False)
        assert page.status == 403
    anonymous = await aiohttp_client(app)
    assert (await anonymous.get("/api/auditor/sessions")).status == 401
    assert await events_of(db, None, "auditor.viewed") == []
