"""Collaborative transactions over the real websocket: the agent drafts, both see the card,
the customer confirms, both see the outcome and the new balances; every wrong move is a
typed refusal and the money moves once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from tests.integration.chat.conftest import Peer, assigned_contact, session_events
from tests.trading.conftest import add_account
from vbank.contact.models import Contact
from vbank.db import Database
from vbank.models import BankAccount, User

OWN = {
    "kind": "own_transfer",
    "from_account": "VB000000007001",
    "to_account": "VB000000007002",
    "amount_minor": 1_250,
    "currency": "CNY",
}


async def setup(db: Database, connect: Any, make_user: Any) -> tuple[Peer, Peer, str]:
    customer, agent, cid = await assigned_contact(connect, make_user)
    async with db.sessions() as session:
        cust = await session.scalar(select(User.id).where(User.username == "cust"))
    assert cust is not None
    await add_account(db, cust, "current", "CNY", 10_000, "VB000000007001")
    await add_account(db, cust, "savings", "CNY", 0, "VB000000007002")
    return customer, agent, cid


async def verify(db: Database, contact_id: str) -> None:
    async with db.transaction() as session:
        row = await session.get(Contact, contact_id)
        assert row is not None
        row.verified_at = datetime.now(UTC)


async def balances(db: Database) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(select(BankAccount.number, BankAccount.balance_minor))
        return {n: b for n, b in rows.all()}


async def test_draft_confirm_over_the_websocket(db: Database, connect: Any, make_user: Any) -> None:
    customer, agent, cid = await setup(db, connect, make_user)

    mid = await agent.send("trade.draft", contact_id=cid, operation=OWN)
    err = await agent.wait_type("error", ref_id=mid)
    assert (err["code"], err["reason"]) == ("refused", "not_verified")

    await verify(db, cid)
    mid = await customer.send("trade.draft", contact_id=cid, operation=OWN)
    assert (await customer.wait_type("error", ref_id=mid))["code"] == "forbidden"

    mid = await agent.send("trade.draft", contact_id=cid, operation=OWN)
    await agent.wait_type("ack", id=mid)
    card = await customer.wait_type("trade.card", contact_id=cid, state="pending")
    assert (await agent.wait_type("trade.card", draft_id=card["draft_id"]))["state"] == "pending"
    assert card["cards"]["en"]["lines"][0] == ["Amount", "CNY 12.50"]
    assert card["cards"]["zh-CN"]["title"] == "本人账户间转账"

    mid = await agent.send(
        "trade.confirm", contact_id=cid, draft_id=card["draft_id"], card_hash=card["hashes"]["en"]
    )
    assert (await agent.wait_type("error", ref_id=mid))["code"] == "forbidden"

    mid = await customer.send(
        "trade.confirm",
        contact_id=cid,
        draft_id=card["draft_id"],
        card_hash=card["hashes"]["zh-CN"],
    )
    await customer.wait_type("ack", id=mid)
    for peer in (customer, agent):
        done = await peer.wait_type("trade.card", draft_id=card["draft_id"], state="executed")
        assert done["reference"].startswith("L")
        accounts = (await peer.wait_type("accounts.balances", contact_id=cid))["accounts"]
        assert {a["number"]: a["balance_minor"] for a in accounts} == {
            "VB000000007001": 8_750,
            "VB000000007002": 1_250,
        }

    mid = await customer.send(  # a resend after a lost ack
        "trade.confirm",
        contact_id=cid,
        draft_id=card["draft_id"],
        card_hash=card["hashes"]["zh-CN"],
    )
    err = await customer.wait_type("error", ref_id=mid)
    assert (err["code"], err["reason"]) == ("refused", "already_decided")
    assert (await balances(db))["VB000000007001"] == 8_750

    types = [e.type for e in await session_events(db, cid)]
    assert types.count("transaction.executed") == 1
    assert "trade.confirmed" in types and "trade.drafted" in types


async def test_bad_drafts_are_refused_and_the_server_goes_on(
    db: Database, connect: Any, make_user: Any
) -> None:
    customer, agent, cid = await setup(db, connect, make_user)
    await verify(db, cid)
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        ({**OWN, "amount_minor": 12.5}, "invalid_message", None),  # floats never
        ({**OWN, "amount_minor": -5}, "refused", "non_positive_amount"),
        ({**OWN, "from_account": "VB999"}, "refused", "foreign_account"),
        ({**OWN, "amount_minor": 10_001}, "refused", "insufficient_funds"),
        ({**OWN, "kind": "launder"}, "refused", "unknown_operation"),
        ({**OWN, "currency": "XXX"}, "refused", "unknown_currency"),
    ]
    for operation, code, reason in cases:
        mid = await agent.send("trade.draft", contact_id=cid, operation=operation)
        err = await agent.wait_type("error", ref_id=mid)
        assert (err["code"], err.get("reason")) == (code, reason), operation
    mid = await agent.send("trade.draft", contact_id="nosuchcontact", operation=OWN)
    assert (await agent.wait_type("error", ref_id=mid))["code"] == "not_found"
    mid = await customer.send("trade.confirm", contact_id=cid, draft_id="dnope", card_hash="0" * 64)
    assert (await customer.wait_type("error", ref_id=mid))["code"] == "not_found"
    mid = await customer.send("chat.send", contact_id=cid, client_id="k1", text="still here")
    await customer.wait_type("ack", id=mid)
    assert customer.of_type("trade.card") == []


async def test_pending_card_survives_reconnect_and_close_withdraws_it(
    db: Database, connect: Any, make_user: Any
) -> None:
    customer, agent, cid = await setup(db, connect, make_user)
    await verify(db, cid)
    mid = await agent.send("trade.draft", contact_id=cid, operation=OWN)
    await agent.wait_type("ack", id=mid)
    card = await customer.wait_type("trade.card", state="pending")
    await customer.close()

    again = await connect("cust")
    replayed = await again.wait_type("trade.card", draft_id=card["draft_id"])
    assert replayed["state"] == "pending" and replayed["hashes"] == card["hashes"]

    mid = await agent.send("contact.close", contact_id=cid)
    await agent.wait_type("ack", id=mid)
    ended = await again.wait_type("trade.card", draft_id=card["draft_id"], state="withdrawn")
    assert ended["reason"] == "contact_closed"
    assert (await balances(db))["VB000000007001"] == 10_000
