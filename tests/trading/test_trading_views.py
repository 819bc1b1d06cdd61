"""The balances API: customers see their own accounts; an agent sees a customer's only for
their own contact, and only once the session is verified."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import signin
from tests.trading.conftest import Bank
from tests.trading.test_service import open_contact, set_verified
from vbank.roles import Role


async def test_accounts_by_role_and_verification(
    bank: Bank, make_user: Any, aiohttp_client: Any, aiohttp_server: Any, app: Any
) -> None:
    server = await aiohttp_server(app)  # one server, one client (cookie jar) per user
    agent = await make_user("agent-v", Role.AGENT)
    await make_user("agent-w", Role.AGENT)
    cid = await open_contact(bank.db, bank.customers["alice"], agent, None)

    alice: TestClient[Any, Any] = await aiohttp_client(server)
    await signin(alice, "alice")
    body = await (await alice.get("/api/accounts")).json()
    assert [(a["number"], a["balance_minor"]) for a in body["accounts"]] == [
        ("VB000000001001", 100_000),
        ("VB000000001002", 50_000),
        ("VB000000001003", 10_000),
    ]
    assert (await alice.get(f"/api/contacts/{cid}/accounts")).status == 403

    ana: TestClient[Any, Any] = await aiohttp_client(server)
    await signin(ana, "agent-v")
    resp = await ana.get(f"/api/contacts/{cid}/accounts")
    assert resp.status == 409 and (await resp.json())["code"] == "not_verified"
    await set_verified(bank.db, cid, datetime.now(UTC))
    resp = await ana.get(f"/api/contacts/{cid}/accounts")
    assert resp.status == 200 and len((await resp.json())["accounts"]) == 3
    assert (await ana.get("/api/contacts/nope/accounts")).status == 404
    assert (await ana.get("/api/accounts")).status == 403

    other: TestClient[Any, Any] = await aiohttp_client(server)
    await signin(other, "agent-w")
    assert (await other.get(f"/api/contacts/{cid}/accounts")).status == 404
