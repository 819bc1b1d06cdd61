"""Chat and routing over the real websocket, real database, real app."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy import select, update

from audit.log import verify_database
from audit.models import AuditEvent
from tests.conftest import MakeUser, signin
from tests.integration.chat.conftest import Peer, assigned_contact
from vbank.context import SERVICES
from vbank.db import Database
from vbank.models import User
from vbank.roles import Role


async def _setup(make_user: MakeUser) -> dict[str, int]:
    return {
        "cust": await make_user("cust", Role.CUSTOMER, display_name="Cust Omer"),
        "cust2": await make_user("cust2", Role.CUSTOMER),
        "ana": await make_user(
            "ana", Role.AGENT, skills=("accounts",), capacity=2, display_name="Ana"
        ),
    }


async def test_queue_route_and_chat_both_ways(
    connect: Any, make_user: MakeUser, db: Database
) -> None:
    ids = await _setup(make_user)
    customer = await connect("cust")
    mid = await customer.send(
        "contact.start", skill="accounts", text="Hello, I need help", client_id="c0"
    )
    ack = await customer.wait_type("ack", id=mid)
    contact_id = ack["contact_id"]
    pos = await customer.wait_type("queue.position", contact_id=contact_id)
    assert pos["position"] == 1 and pos["estimated_wait_s"] >= 0

    agent = await connect("ana")
    await agent.send("agent.status", status="available")
    assigned = await agent.wait_type("contact.assigned", contact_id=contact_id)
    assert assigned["customer_name"] == "Cust Omer" and assigned["agent_id"] == str(ids["ana"])
    mine = await customer.wait_type("contact.assigned", contact_id=contact_id)
    assert mine["agent_name"] == "Ana" and mine.get("customer_name") is None

    # the first message arrived before the agent: it comes with the assignment
    first = await agent.wait_type("chat.message", contact_id=contact_id, seq=1)
    assert first["text"] == "Hello, I need help"
    # and again on a fresh connection's hello/resume
    agent2 = await connect("ana", resume={})
    first = await agent2.wait_type("chat.message", contact_id=contact_id, seq=1)
    assert first["text"] == "Hello, I need help" and first["sender"] == "customer"

    sent: dict[str, str] = {}  # envelope id -> text, for each side's own lines
    for i in range(5):
        mid = await customer.send(
            "chat.send", contact_id=contact_id, client_id=f"c{i + 1}", text=f"cust {i}"
        )
        sent[mid] = f"cust {i}"
        mid = await agent.send(
            "chat.send", contact_id=contact_id, client_id=f"a{i}", text=f"agent {i}"
        )
        sent[mid] = f"agent {i}"
    await customer.wait_for(lambda f: f.get("type") == "chat.message" and f["seq"] == 11)
    await agent.wait_for(lambda f: f.get("type") == "ack" and f.get("seq") == 11)
    for peer, own in ((customer, "cust "), (agent, "agent ")):
        # the other side's lines arrive as chat.message, in order, once each; our own
        # lines are confirmed by their acks (seq and time), never echoed back to us
        frames = [f for f in peer.of_type("chat.message") if f["contact_id"] == contact_id]
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert not [f for f in frames if f["text"].startswith(own)]
        lines = {f["seq"]: f["text"] for f in frames}
        acks = [f for f in peer.of_type("ack") if f["id"] in sent]
        assert all(f["ts"] for f in acks)
        lines.update({f["seq"]: sent[f["id"]] for f in acks})
        timeline = [lines[seq] for seq in sorted(lines)]
        assert [t for t in timeline if t.startswith("cust ")] == [f"cust {i}" for i in range(5)]
        assert [t for t in timeline if t.startswith("agent ")] == [f"agent {i}" for i in range(5)]
        assert sorted(lines)[-10:] == list(range(2, 12))

    # a resend of the same client id is acknowledged with the original seq, not stored twice
    before = len(agent.of_type("chat.message"))
    resend = await customer.send("chat.send", contact_id=contact_id, client_id="c3", text="cust 2")
    again = await customer.wait_type("ack", id=resend)
    original = next(f for f in customer.of_type("ack") if sent.get(f["id"]) == "cust 2")
    assert again["seq"] == original["seq"] and again["ts"] == original["ts"]
    await asyncio.sleep(0.2)
    assert len(agent.of_type("chat.message")) == before

    # closing tells both sides; every step is in a valid audit chain
    await agent.send("contact.close", contact_id=contact_id)
    await customer.wait_type("contact.closed", contact_id=contact_id, reason="agent")
    async with db.sessions() as session:
        types = [
            e.type
            for e in (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.session_ref == contact_id)
                )
            ).scalars()
        ]
        assert (await verify_database(session)).ok
    assert (
        types[0] == "contact.queued"
        and "contact.assigned" in types
        and types[-1] == "contact.closed"
    )
    assert types.count("chat.message") == 11


async def test_history_survives_reconnect_and_restart(
    connect: Any, make_user: MakeUser, aiohttp_client: Any, settings: Any
) -> None:
    await _setup(make_user)
    customer = await connect("cust")
    agent = await connect("ana")
    await agent.send("agent.status", status="available")
    mid = await customer.send("contact.start", skill="accounts")
    contact_id = (await customer.wait_type("ack", id=mid))["contact_id"]
    await customer.wait_type("contact.assigned", contact_id=contact_id)
    for i in range(3):
        await customer.send("chat.send", contact_id=contact_id, client_id=f"x{i}", text=f"line {i}")
    await agent.wait_for(lambda f: f.get("type") == "chat.message" and f["seq"] == 3)

    # a new server on the same database (a restart): history and the assignment survive
    from tests.conftest import signin
    from vbank.app import create_app

    fresh = await aiohttp_client(create_app(settings))
    await signin(fresh, "cust")
    ws = await fresh.ws_connect("/ws")
    from tests.integration.chat.conftest import Peer

    again = Peer(fresh, ws)
    await again.send("hello", resume={contact_id: 1})
    await again.wait_type("contact.assigned", contact_id=contact_id)
    await again.wait_type("chat.message", contact_id=contact_id, seq=3)
    assert [f["seq"] for f in again.of_type("chat.message")] == [2, 3]
    await again.close()


async def test_wrong_roles_and_foreign_contacts_are_refused(
    connect: Any, make_user: MakeUser
) -> None:
    await _setup(make_user)
    await make_user("ida", Role.AUDITOR)
    customer = await connect("cust")
    other = await connect("cust2")
    auditor = await connect("ida")
    mid = await customer.send("contact.start", skill="accounts")
    contact_id = (await customer.wait_type("ack", id=mid))["contact_id"]

    ref = await customer.send("agent.status", status="available")
    assert (await customer.wait_type("error", ref_id=ref))["code"] == "forbidden"
    ref = await auditor.send("chat.send", contact_id=contact_id, client_id="z", text="hi")
    assert (await auditor.wait_type("error", ref_id=ref))["code"] == "forbidden"
    ref = await other.send("chat.send", contact_id=contact_id, client_id="z", text="peek")
    assert (await other.wait_type("error", ref_id=ref))["code"] == "not_found"
    ref = await other.send("contact.close", contact_id=contact_id)
    assert (await other.wait_type("error", ref_id=ref))["code"] == "not_found"
    ref = await customer.send("contact.start", skill="accounts")
    assert (await customer.wait_type("error", ref_id=ref))["code"] == "out_of_order"
    ref = await customer.send("contact.start", skill="astrology")
    assert (await customer.wait_type("error", ref_id=ref))["code"] == "invalid_message"
    # the customer's own contact still works
    ref = await customer.send(
        "chat.send", contact_id=contact_id, client_id="ok1", text="still here"
    )
    assert (await customer.wait_type("ack", id=ref))["seq"] == 1


async def test_hostile_frames_get_typed_errors_and_others_go_on(
    connect: Any, make_user: MakeUser
) -> None:
    await _setup(make_user)
    bad = await connect("cust")
    good = await connect("cust2")
    cases = {
        "{nope": "bad_json",
        "[1, 2]": "invalid_message",
        '{"v": 9, "type": "ping"}': "unsupported_version",
        '{"v": 1, "type": "teleport"}': "unknown_type",
        '{"v": 1, "type": "chat.send", "contact_id": "x"}': "invalid_message",
        '{"v": 1, "type": "ping", "extra": 1}': "invalid_message",
        "[" * 5000 + "]" * 5000: "bad_json",
    }
    for raw, code in cases.items():
        await bad.send_raw(raw)
        frame = await bad.wait_for(lambda f: f.get("type") == "error" and f not in seen)
        seen.append(frame)
        assert frame["code"] == code, (raw[:40], frame)
    ref = await good.send("ping")
    await good.wait_type("pong", id=ref)


seen: list[dict[str, Any]] = []


async def test_flooding_client_is_cut_off_alone(connect: Any, make_user: MakeUser) -> None:
    await _setup(make_user)
    flooder = await connect("cust")
    bystander = await connect("cust2")
    for _ in range(200):
        if flooder.ws.closed:
            break
        try:
            await flooder.send("ping")
        except ConnectionError:
            break
    await flooder.wait_for(lambda f: f.get("code") == "rate_limited")
    await asyncio.sleep(0.3)
    assert flooder.ws.closed and flooder.ws.close_code == 1008
    ref = await bystander.send("ping")
    await bystander.wait_type("pong", id=ref)


async def test_reads_go_on_while_a_write_transaction_is_open(
    connect: Any, make_user: MakeUser, app: web.Application, server: Any, aiohttp_client: Any
) -> None:
    """Signing a request in and a reconnect's hello (open contacts, names, history,
    drafts) do not wait for another write transaction: on SQLite they read on the
    read-only connection."""
    customer, agent, contact_id = await assigned_contact(connect, make_user)
    await customer.send("chat.send", contact_id=contact_id, client_id="w1", text="before")
    await agent.wait_type("chat.message", contact_id=contact_id, seq=1)
    client = await aiohttp_client(server)
    await signin(client, "ana")  # signing in writes: before the lock is taken

    async with app[SERVICES].db.transaction() as session:
        # holds SQLite's write lock (and the service's one write connection) meanwhile
        await session.execute(update(User).where(User.username == "cust").values(disabled=False))
        me = await asyncio.wait_for(client.get("/api/auth/me"), 5)
        assert me.status == 200 and (await me.json())["user"]["username"] == "ana"
        ws = await asyncio.wait_for(client.ws_connect("/ws"), 5)
        again = Peer(client, ws)
        await again.send("hello", resume={})
        line = await again.wait_type("chat.message", contact_id=contact_id, seq=1)
        assert line["text"] == "before"
        await again.wait_type("contact.assigned", contact_id=contact_id)
    await again.close()
