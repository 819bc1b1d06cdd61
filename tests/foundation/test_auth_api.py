from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from audit.log import verify_database
from audit.models import AuditEvent
from tests.conftest import MakeUser, signin
from vbank.db import Database
from vbank.roles import Role

Client = TestClient[Any, Any]


async def _events(db: Database, type_: str) -> list[AuditEvent]:
    async with db.sessions() as session:
        return list(
            (await session.execute(select(AuditEvent).where(AuditEvent.type == type_))).scalars()
        )


async def test_signin_sets_a_safe_cookie_and_reaches_me(
    client: Client, make_user: MakeUser, db: Database
) -> None:
    uid = await make_user("alice", Role.CUSTOMER, display_name="Alice")
    resp = await client.post(
        "/api/auth/signin", json={"username": "Alice ", "password": "correct-horse-battery"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["user"] == {
        "id": uid,
        "username": "alice",
        "display_name": "Alice",
        "role": "customer",
    }
    assert body["home"] == "/customer"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain-HTTP test server, VBANK_COOKIE_SECURE off
    me = await client.get("/api/auth/me")
    assert me.status == 200
    assert (await me.json())["csrf_token"] == body["csrf_token"]
    [event] = await _events(db, "auth.signin")
    assert event.actor_id == uid
    assert "alice" not in event.payload  # ids, not names, in the trail's payload


async def test_secure_cookie_when_configured(
    aiohttp_client: Any, settings: Any, make_user: MakeUser
) -> None:
    from dataclasses import replace

    from vbank.app import create_app

    client = await aiohttp_client(create_app(replace(settings, cookie_secure=True)))
    await make_user("alice", Role.CUSTOMER)
    resp = await client.post(
        "/api/auth/signin", json={"username": "alice", "password": "correct-horse-battery"}
    )
    assert resp.status == 200
    assert "Secure" in resp.headers["Set-Cookie"]


async def test_wrong_password_and_unknown_user_look_the_same(
    client: Client, make_user: MakeUser, db: Database
) -> None:
    await make_user("alice", Role.CUSTOMER)
    bad = await client.post(
        "/api/auth/signin", json={"username": "alice", "password": "nope-nope-nope"}
    )
    unknown = await client.post(
        "/api/auth/signin", json={"username": "mallory", "password": "nope-nope-nope"}
    )
    for resp in (bad, unknown):
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
        assert body["code"] == "invalid_credentials"
        assert body["detail"] == "wrong username or password"
    failures = await _events(db, "auth.signin_failed")
    assert len(failures) == 2
    async with db.sessions() as session:
        assert (await verify_database(session)).ok


async def test_throttling_after_repeated_failures(client: Client, make_user: MakeUser) -> None:
    await make_user("alice", Role.CUSTOMER)
    for _ in range(3):  # settings.signin_max_failures == 3 in tests
        resp = await client.post(
            "/api/auth/signin", json={"username": "alice", "password": "wrong-wrong-1"}
        )
        assert resp.status == 401
    resp = await client.post(
        "/api/auth/signin", json={"username": "alice", "password": "correct-horse-battery"}
    )
    assert resp.status == 429
    assert (await resp.json())["code"] == "throttled"
    assert 50 <= int(resp.headers["Retry-After"]) <= 60
    # another user from the same address is not locked out by alice's failures
    await make_user("bob", Role.CUSTOMER)
    assert (
        await client.post(
            "/api/auth/signin", json={"username": "bob", "password": "correct-horse-battery"}
        )
    ).status == 200


async def test_bad_bodies_get_clear_errors(client: Client, make_user: MakeUser) -> None:
    await make_user("alice", Role.CUSTOMER)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "bad_json"),
        (
            {
                "data": "username=a&password=b",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            415,
            "unsupported_media_type",
        ),
        ({"json": ["alice", "pw"]}, 400, "invalid_request"),
        ({"json": {"username": "", "password": "x"}}, 400, "invalid_request"),
        ({"json": {"username": "alice"}}, 400, "invalid_request"),
        ({"json": {"username": "alice", "password": "p", "admin": True}}, 400, "invalid_request"),
        ({"json": {"username": "a" * 65, "password": "x"}}, 400, "invalid_request"),
        ({"json": {"username": "alice", "password": "x" * (1024 * 1024)}}, 413, "too_large"),
    ]
    for kwargs, status, code in cases:
        resp = await client.post("/api/auth/signin", **kwargs)
        assert resp.status == status, (kwargs.keys(), await resp.text())
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
        assert body["code"] == code
        assert body["status"] == status and body["detail"]
    # the server keeps serving
    assert (
        await client.post(
            "/api/auth/signin", json={"username": "alice", "password": "correct-horse-battery"}
        )
    ).status == 200


async def test_signout_needs_csrf_and_ends_the_session(
    client: Client, make_user: MakeUser, db: Database
) -> None:
    await make_user("alice", Role.CUSTOMER)
    csrf = await signin(client, "alice")
    resp = await client.post("/api/auth/signout")
    assert resp.status == 403 and (await resp.json())["code"] == "csrf_failed"
    resp = await client.post("/api/auth/signout", headers={"X-CSRF-Token": "forged"})
    assert resp.status == 403
    resp = await client.post("/api/auth/signout", headers={"X-CSRF-Token": csrf})
    assert resp.status == 204
    assert (await client.get("/api/auth/me")).status == 401
    assert len(await _events(db, "auth.signout")) == 1


async def test_foreign_origin_is_refused_on_state_changes(
    client: Client, make_user: MakeUser
) -> None:
    await make_user("alice", Role.CUSTOMER)
    csrf = await signin(client, "alice")
    resp = await client.post(
        "/api/auth/signout", headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    )
    assert resp.status == 403 and (await resp.json())["code"] == "bad_origin"
    resp = await client.post(
        "/api/auth/signin",
        json={"username": "alice", "password": "correct-horse-battery"},
        headers={"Origin": "https://evil.example"},
    )
    assert resp.status == 403


async def test_expired_session_is_refused(
    client: Client, make_user: MakeUser, db: Database
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from vbank.models import AuthSession

    await make_user("alice", Role.CUSTOMER)
    await signin(client, "alice")
    async with db.transaction() as session:
        await session.execute(
            update(AuthSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    resp = await client.get("/api/auth/me")
    assert resp.status == 401 and (await resp.json())["code"] == "unauthenticated"


async def test_disabled_user_cannot_sign_in_or_use_a_session(
    client: Client, make_user: MakeUser, db: Database
) -> None:
    from sqlalchemy import update

    from vbank.models import User

    uid = await make_user("alice", Role.CUSTOMER)
    await signin(client, "alice")
    async with db.transaction() as session:
        await session.execute(update(User).where(User.id == uid).values(disabled=True))
    assert (await client.get("/api/auth/me")).status == 401
    resp = await client.post(
        "/api/auth/signin", json={"username": "alice", "password": "correct-horse-battery"}
    )
    assert resp.status == 401


async def test_unknown_api_path_is_problem_json(client: Client) -> None:
    resp = await client.get("/api/nope")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    resp = await client.put("/api/auth/signin")
    assert resp.status == 405
