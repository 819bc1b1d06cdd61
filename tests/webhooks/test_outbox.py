"""The transactional outbox: rows commit and roll back with the change that causes them."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from audit.log import append
from tests.webhooks.conftest import SUPERVISOR, MakeEndpoint
from vbank.db import Database
from vbank.webhooks import endpoints, outbox
from vbank.webhooks.models import WebhookDelivery

URL = "http://127.0.0.1:9/hook"


class Boom(Exception):
    pass


async def _rows(db: Database) -> list[WebhookDelivery]:
    async with db.sessions() as session:
        return list((await session.execute(select(WebhookDelivery))).scalars())


async def test_rows_roll_back_with_a_failed_transaction(
    db: Database, make_endpoint: MakeEndpoint
) -> None:
    await make_endpoint(URL)
    with pytest.raises(Boom):
        async with db.transaction() as session:
            assert await outbox.enqueue(session, "transaction.executed", {"reference": "L1"}) == 1
            raise Boom
    with pytest.raises(Boom):
        async with db.transaction() as session:
            await append(session, "contact.closed", {"reason": "agent"}, session_ref="c1")
            raise Boom
    assert await _rows(db) == []
    async with db.transaction() as session:
        await append(session, "contact.closed", {"reason": "agent"}, session_ref="c1")
    assert [r.event_type for r in await _rows(db)] == ["contact.closed"]


async def test_one_row_per_enabled_subscribed_endpoint(
    db: Database, make_endpoint: MakeEndpoint
) -> None:
    a, _ = await make_endpoint(URL, ["survey.invited", "survey.completed"])
    b, _ = await make_endpoint(URL, ["survey.invited"])
    c, _ = await make_endpoint(URL, ["survey.invited"])
    await make_endpoint(URL, ["contact.closed"])
    async with db.transaction() as session:
        await endpoints.set_enabled(session, c, False, actor=SUPERVISOR, reason=None)
    async with db.transaction() as session:
        assert await outbox.enqueue(session, "survey.invited", {"survey_id": 5}) == 2
        assert await outbox.enqueue(session, "survey.completed", {"survey_id": 5}) == 1
        assert await outbox.enqueue(session, "verification.completed", {"x": 1}) == 0
        with pytest.raises(ValueError):
            await outbox.enqueue(session, "no.such.event", {})
    rows = await _rows(db)
    assert sorted((r.endpoint_id, r.event_type) for r in rows) == [
        (a, "survey.completed"),
        (a, "survey.invited"),
        (b, "survey.invited"),
    ]
    invited = [r for r in rows if r.event_type == "survey.invited"]
    assert invited[0].msg_id == invited[1].msg_id  # one message, the same id everywhere
    body = json.loads(invited[0].body)
    assert body["type"] == "survey.invited" and body["data"] == {"survey_id": 5}
    assert body["timestamp"].endswith("Z")


async def test_audit_events_become_thin_webhooks(db: Database, make_endpoint: MakeEndpoint) -> None:
    await make_endpoint(URL)
    async with db.transaction() as session:
        await append(
            session,
            "verify.decision",
            {"attempt_id": "a1", "outcome": "approved", "reason": "looks fine", "distance": 0.3},
            session_ref="c9",
        )
        await append(
            session,
            "transaction.executed",
            {
                "reference": "L4",
                "kind": "transfer",
                "customer_id": 3,
                "amount_minor": 1200,
                "currency": "CNY",
                "card_hash": "ab",
                "accounts": [1, 2],
            },
        )
    bodies = {r.event_type: json.loads(r.body)["data"] for r in await _rows(db)}
    verification = bodies["verification.completed"]
    assert verification["contact_id"] == "c9" and verification["outcome"] == "approved"
    assert "reason" not in verification and "distance" not in verification
    tx = bodies["transaction.executed"]
    assert tx["reference"] == "L4" and tx["amount_minor"] == 1200
    assert "accounts" not in tx and "card_hash" not in tx


async def test_workers_are_woken_after_commit_only(
    db: Database, make_endpoint: MakeEndpoint
) -> None:
    await make_endpoint(URL)
    woken: list[int] = []

    def waker() -> None:
        woken.append(1)

    outbox.add_waker(waker)
    try:
        with pytest.raises(Boom):
            async with db.transaction() as session:
                await outbox.enqueue(session, "contact.closed", {"contact_id": "c"})
                raise Boom
        assert woken == []
        async with db.transaction() as session:
            await outbox.enqueue(session, "contact.closed", {"contact_id": "c"})
            assert woken == []
        assert woken == [1]
    finally:
        outbox.remove_waker(waker)
