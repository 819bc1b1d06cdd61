"""The supervisors' webhook API: roles, validation, secret shown once, dead letters."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from tests.conftest import MakeUser, signin
from vbank.db import Database
from vbank.roles import Role
from vbank.webhooks.models import WebhookDelivery
from vbank.webhooks.outbox import enqueue

API = "/api/webhooks"
HOOK = "http://127.0.0.1:9/hook"


async def _supervisor(client: TestClient[Any, Any], make_user: MakeUser) -> dict[str, str]:
    await make_user("sup", Role.SUPERVISOR)
    return {"X-CSRF-Token": await signin(client, "sup")}


async def test_other_roles_are_refused(client: TestClient[Any, Any], make_user: MakeUser) -> None:
    for name, role in (("agt", Role.AGENT), ("cus", Role.CUSTOMER), ("aud", Role.AUDITOR)):
        await make_user(name, role)
        headers = {"X-CSRF-Token": await signin(client, name)}
        resp = await client.get(f"{API}/endpoints")
        assert resp.status == 403
        resp = await client.post(
            f"{API}/endpoints",
            json={"url": HOOK, "event_types": ["contact.closed"], "allow_private": True},
            headers=headers,
        )
        assert resp.status == 403
        resp = await client.post(f"{API}/dead-letters/1/redeliver", headers=headers, json={})
        assert resp.status == 403
        await client.post("/api/auth/signout", headers=headers)


async def test_endpoint_lifecycle(client: TestClient[Any, Any], make_user: MakeUser) -> None:
    h = await _supervisor(client, make_user)
    resp = await client.post(
        f"{API}/endpoints",
        json={
            "url": HOOK,
            "event_types": ["survey.completed", "contact.closed"],
            "allow_private": True,
        },
        headers=h,
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    secret = created["secret"]
    assert secret.startswith("whsec_")
    ep = created["endpoint"]
    assert ep["event_types"] == ["contact.closed", "survey.completed"] and ep["enabled"]

    listing = await (await client.get(f"{API}/endpoints")).json()
    assert secret not in str(listing)
    assert [e["id"] for e in listing["endpoints"]] == [ep["id"]]
    assert "verification.completed" in listing["event_types"]

    resp = await client.post(
        f"{API}/endpoints/{ep['id']}/disable", json={"reason": "maintenance"}, headers=h
    )
    assert resp.status == 200
    body = await resp.json()
    assert not body["endpoint"]["enabled"] and body["endpoint"]["disabled_reason"] == "maintenance"
    resp = await client.post(f"{API}/endpoints/{ep['id']}/enable", json={}, headers=h)
    assert (await resp.json())["endpoint"]["enabled"]

    resp = await client.post(f"{API}/endpoints/{ep['id']}/secrets", json={}, headers=h)
    assert resp.status == 201
    rotated = await resp.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    listing = await (await client.get(f"{API}/endpoints")).json()
    secret_ids = listing["endpoints"][0]["secret_ids"]
    assert len(secret_ids) == 2 and rotated["secret_id"] in secret_ids

    resp = await client.delete(f"{API}/endpoints/{ep['id']}/secrets/{secret_ids[0]}", headers=h)
    assert resp.status == 204
    resp = await client.delete(f"{API}/endpoints/{ep['id']}/secrets/{secret_ids[1]}", headers=h)
    assert resp.status == 409  # the last secret stays

    resp = await client.delete(f"{API}/endpoints/{ep['id']}", headers=h)
    assert resp.status == 204
    assert (await (await client.get(f"{API}/endpoints")).json())["endpoints"] == []


async def test_bad_input(client: TestClient[Any, Any], make_user: MakeUser) -> None:
    h = await _supervisor(client, make_user)

    async def create(body: dict[str, Any]) -> tuple[int, str]:
        resp = await client.post(f"{API}/endpoints", json=body, headers=h)
        return resp.status, (await resp.json())["code"]

    assert await create({"url": "not a url", "event_types": ["contact.closed"]}) == (
        400,
        "invalid_url",
    )
    assert await create({"url": "ftp://x.example/", "event_types": ["contact.closed"]}) == (
        400,
        "invalid_url",
    )
    assert await create({"url": HOOK, "event_types": ["contact.closed"]}) == (
        400,
        "private_address",
    )
    assert (await create({"url": HOOK, "event_types": ["nope"], "allow_private": True}))[0] == 400
    assert (await create({"url": HOOK, "event_types": []}))[0] == 400
    assert (await create({"url": HOOK}))[0] == 400
    for method, path in (
        ("POST", f"{API}/endpoints/999/disable"),
        ("POST", f"{API}/endpoints/999/enable"),
        ("POST", f"{API}/endpoints/999/secrets"),
        ("DELETE", f"{API}/endpoints/999"),
        ("DELETE", f"{API}/endpoints/999/secrets/1"),
        ("POST", f"{API}/dead-letters/999/redeliver"),
        ("POST", f"{API}/dead-letters/abc/redeliver"),
    ):
        resp = await client.request(method, path, json={}, headers=h)
        assert resp.status == 404, (method, path)


async def test_dead_letters_and_redeliver(
    client: TestClient[Any, Any], make_user: MakeUser, db: Database
) -> None:
    h = await _supervisor(client, make_user)
    resp = await client.post(
        f"{API}/endpoints",
        json={"url": HOOK, "event_types": ["contact.closed"], "allow_private": True},
        headers=h,
    )
    ep_id = (await resp.json())["endpoint"]["id"]
    async with db.transaction() as session:
        await enqueue(session, "contact.closed", {"contact_id": "c1"})
        await session.execute(update(WebhookDelivery).values(state="dead", attempts=8))
    [letter] = (await (await client.get(f"{API}/dead-letters")).json())["dead_letters"]
    assert letter["endpoint_id"] == ep_id and letter["event_type"] == "contact.closed"

    await client.post(f"{API}/endpoints/{ep_id}/disable", json={}, headers=h)
    resp = await client.post(f"{API}/dead-letters/{letter['id']}/redeliver", json={}, headers=h)
    assert resp.status == 409
    await client.post(f"{API}/endpoints/{ep_id}/enable", json={}, headers=h)
    resp = await client.post(f"{API}/dead-letters/{letter['id']}/redeliver", json={}, headers=h)
    assert resp.status == 202
    async with db.sessions() as session:
        row = (await session.execute(select(WebhookDelivery))).scalar_one()
    assert row.state in ("pending", "dead") and row.msg_id == letter["msg_id"]
    resp = await client.post(f"{API}/dead-letters/{letter['id']}/redeliver", json={}, headers=h)
    assert resp.status in (202, 404)
