"""The customer's survey card API and the public signed-link API, against the real app."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from audit.models import AuditEvent
from tests.conftest import signin
from tests.surveys.conftest import (
    People,
    add_endpoint,
    close_contact,
    deliveries,
    invited_survey,
    survey_of,
)
from vbank.config import Settings
from vbank.db import Database
from vbank.http.survey_views import SURVEYS
from vbank.surveys import links

Client = TestClient[Any, Any]
Login = Callable[[str], Awaitable[tuple[Client, dict[str, str]]]]


@pytest.fixture
async def server(aiohttp_server: Any, app: web.Application) -> TestServer:
    srv: TestServer = await aiohttp_server(app)
    return srv


@pytest.fixture
def login(aiohttp_client: Any, server: TestServer) -> Login:
    async def make(username: str) -> tuple[Client, dict[str, str]]:
        client: Client = await aiohttp_client(server)
        return client, {"X-CSRF-Token": await signin(client, username)}

    return make


@pytest.fixture
async def anonymous(aiohttp_client: Any, server: TestServer) -> Client:
    client: Client = await aiohttp_client(server)
    return client


async def test_customer_answers_on_the_page_once(
    login: Login, db: Database, people: People
) -> None:
    await add_endpoint(db, "survey.completed")
    cid = await close_contact(db, people.cust, people.ana)
    cust, csrf = await login("cust")
    resp = await cust.get("/api/surveys/pending", params={"contact_id": cid})
    assert resp.status == 200
    pending = (await resp.json())["survey"]
    assert pending["contact_id"] == cid and pending["state"] == "offered"
    assert pending["skill"] == "accounts"
    # without a contact id: the newest open one
    assert (await (await cust.get("/api/surveys/pending")).json())["survey"]["id"] == pending["id"]

    answer = {"csat": 4, "nps": 9, "comment": "  Very helpful, thank you  "}
    resp = await cust.post(f"/api/surveys/{pending['id']}", json=answer, headers=csrf)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["survey"]["state"] == "completed"
    survey = await survey_of(db, cid)
    assert survey is not None
    assert (survey.state, survey.csat, survey.nps, survey.channel) == ("completed", 4, 9, "page")
    assert survey.comment == "Very helpful, thank you" and survey.completed_at is not None
    assert survey.token_used_at is None

    again = await cust.post(f"/api/surveys/{pending['id']}", json={"csat": 1}, headers=csrf)
    assert again.status == 409
    assert again.content_type == "application/problem+json"
    assert (await again.json())["code"] == "already_answered"
    assert (await survey_of(db, cid)).csat == 4  # type: ignore[union-attr]
    resp = await cust.get("/api/surveys/pending", params={"contact_id": cid})
    assert (await resp.json())["survey"] is None

    # one thin webhook, one audit event: scores and ids, never the comment
    [hook] = await deliveries(db, "survey.completed")
    assert hook["data"] == {"survey_id": survey.id, "contact_id": cid, "csat": 4, "nps": 9}
    async with db.sessions() as s:
        payloads = (
            await s.scalars(select(AuditEvent.payload).where(AuditEvent.type == "survey.completed"))
        ).all()
    assert [json.loads(p) for p in payloads] == [
        {"survey_id": survey.id, "contact_id": cid, "csat": 4, "nps": 9, "channel": "page"}
    ]
    async with db.sessions() as s:
        everything = (await s.scalars(select(AuditEvent.payload))).all()
    assert not any("helpful" in p for p in everything)


async def test_another_customers_survey_is_not_found(
    login: Login, db: Database, people: People
) -> None:
    cid = await close_contact(db, people.cust, people.ana)
    survey = await survey_of(db, cid)
    assert survey is not None
    otto, csrf = await login("otto")
    resp = await otto.get("/api/surveys/pending", params={"contact_id": cid})
    assert (await resp.json())["survey"] is None
    assert (await (await otto.get("/api/surveys/pending")).json())["survey"] is None
    resp = await otto.post(f"/api/surveys/{survey.id}", json={"csat": 1}, headers=csrf)
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"
    resp = await otto.post(f"/api/surveys/{'0' * 32}", json={"csat": 1}, headers=csrf)
    assert resp.status == 404
    assert (await survey_of(db, cid)).state == "offered"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"csat": 0},
        {"csat": 6},
        {"csat": "4"},
        {"csat": True},
        {"csat": 4.0},
        {"csat": 4, "nps": 11},
        {"csat": 4, "nps": -1},
        {"csat": 4, "comment": "x" * 1001},
        {"csat": 4, "extra": 1},
    ],
)
async def test_bad_answers_are_refused(
    login: Login, db: Database, people: People, body: dict[str, Any]
) -> None:
    cid = await close_contact(db, people.cust, people.ana)
    survey = await survey_of(db, cid)
    assert survey is not None
    cust, csrf = await login("cust")
    resp = await cust.post(f"/api/surveys/{survey.id}", json=body, headers=csrf)
    assert resp.status == 400, body
    assert (await survey_of(db, cid)).state == "offered"  # type: ignore[union-attr]


async def test_answer_needs_the_csrf_token(login: Login, db: Database, people: People) -> None:
    cid = await close_contact(db, people.cust, people.ana)
    survey = await survey_of(db, cid)
    assert survey is not None
    cust, _ = await login("cust")
    resp = await cust.post(f"/api/surveys/{survey.id}", json={"csat": 5})
    assert resp.status == 403 and (await resp.json())["code"] == "csrf_failed"


async def test_signed_link_answers_once(
    app: web.Application, login: Login, anonymous: Client, db: Database, people: People
) -> None:
    invited, token = await invited_survey(app, db, people.cust, people.ana)
    cid = invited.contact_id

    page = await anonymous.get("/survey")
    assert page.status == 200 and "text/html" in page.content_type
    resp = await anonymous.get(f"/api/surveys/link/{token}")
    assert resp.status == 200
    assert (await resp.json())["survey"] == {"skill": "accounts", "state": "invited"}
    assert (await survey_of(db, cid)).token_used_at is None  # type: ignore[union-attr]

    # a foreign page cannot post the answer for the customer
    evil = await anonymous.post(
        f"/api/surveys/link/{token}", json={"csat": 1}, headers={"Origin": "https://evil.example"}
    )
    assert evil.status == 403 and (await evil.json())["code"] == "bad_origin"
    # JSON only: a plain form post is refused before anything happens
    form = await anonymous.post(f"/api/surveys/link/{token}", data={"csat": "1"})
    assert form.status == 415

    origin = {"Origin": str(anonymous.make_url("/")).rstrip("/")}
    ok = await anonymous.post(
        f"/api/surveys/link/{token}", json={"csat": 5, "comment": "great"}, headers=origin
    )
    assert ok.status == 200, await ok.text()
    survey = await survey_of(db, cid)
    assert survey is not None
    assert (survey.state, survey.csat, survey.nps, survey.channel) == ("completed", 5, None, "link")
    assert survey.token_used_at is not None and survey.comment == "great"

    # replayed: refused, and the stored answer stands
    for again in (
        await anonymous.post(f"/api/surveys/link/{token}", json={"csat": 1}, headers=origin),
        await anonymous.get(f"/api/surveys/link/{token}"),
    ):
        assert again.status == 409 and (await again.json())["code"] == "already_answered"
    assert (await survey_of(db, cid)).csat == 5  # type: ignore[union-attr]
    assert len(await deliveries(db, "survey.completed")) == 1

    # the customer's page no longer offers it either
    cust, csrf = await login("cust")
    resp = await cust.post(f"/api/surveys/{survey.id}", json={"csat": 1}, headers=csrf)
    assert resp.status == 409


async def test_a_link_after_a_page_answer_is_refused(
    app: web.Application, login: Login, anonymous: Client, db: Database, people: People
) -> None:
    survey, token = await invited_survey(app, db, people.cust, people.ana)
    cid = survey.contact_id
    cust, csrf = await login("cust")
    # the page still answers an invited survey
    assert (await cust.get("/api/surveys/pending")).status == 200
    resp = await cust.post(f"/api/surveys/{survey.id}", json={"csat": 3}, headers=csrf)
    assert resp.status == 200
    resp = await anonymous.post(f"/api/surveys/link/{token}", json={"csat": 1})
    assert resp.status == 409
    assert (await survey_of(db, cid)).channel == "page"  # type: ignore[union-attr]


def _flip(token: str, index: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    c = token[index]
    return token[:index] + alphabet[(alphabet.index(c) + 1) % 64] + token[index + 1 :]


async def test_tampered_foreign_and_expired_links_are_refused(
    app: web.Application, anonymous: Client, db: Database, people: People, settings: Settings
) -> None:
    survey, token = await invited_survey(app, db, people.cust, people.ana)
    cid = survey.contact_id
    key = links.link_key(settings.secret_key)
    later = datetime.now(UTC) + timedelta(days=30)
    cases = {
        # another survey id, expiry or MAC byte: the MAC no longer matches
        "tampered id": (_flip(token, 3), 400, "invalid_link"),
        "tampered expiry": (_flip(token, 23), 400, "invalid_link"),
        "tampered mac": (_flip(token, 60), 400, "invalid_link"),
        "truncated": (token[:-4], 400, "invalid_link"),
        "garbage": ("not-a-token", 400, "invalid_link"),
        "unpadded junk": ("a" * 300, 400, "invalid_link"),
        # the raw secret or another label's key does not sign links
        "raw secret": (
            links.make_token(settings.secret_key.encode(), survey.id, later),
            400,
            "invalid_link",
        ),
        # genuine MAC, expiry in the past
        "expired": (
            links.make_token(key, survey.id, datetime.now(UTC) - timedelta(seconds=1)),
            410,
            "link_expired",
        ),
        # genuine, but for a survey that does not exist: same answer as tampering
        "unknown survey": (links.make_token(key, "ab" * 16, later), 400, "invalid_link"),
    }
    for name, (bad, status, code) in cases.items():
        for resp in (
            await anonymous.get(f"/api/surveys/link/{bad}"),
            await anonymous.post(f"/api/surveys/link/{bad}", json={"csat": 1}),
        ):
            assert resp.status == status, name
            problem = await resp.json()
            assert problem["code"] == code, name
            assert survey.id not in json.dumps(problem) and cid not in json.dumps(problem)
    fresh = await survey_of(db, cid)
    assert fresh is not None and fresh.state == "invited" and fresh.token_used_at is None
    # the genuine token still works after all that
    resp = await anonymous.post(f"/api/surveys/link/{token}", json={"csat": 2})
    assert resp.status == 200


async def test_a_link_past_its_days_is_refused_even_with_a_valid_token(
    app: web.Application, anonymous: Client, db: Database, people: People, settings: Settings
) -> None:
    """The validity is also judged from the stored invitation time (state ``expired``)."""
    survey, _ = await invited_survey(app, db, people.cust, people.ana)
    # a token minted with a longer expiry than the invitation allows (e.g. by a
    # misconfigured node): the stored invitation time still bounds the link
    async with db.transaction() as s:
        from vbank.surveys.models import Survey

        row = await s.get(Survey, survey.id)
        assert row is not None
        row.invited_at = datetime.now(UTC) - timedelta(days=8)
    long_lived = links.make_token(
        links.link_key(settings.secret_key), survey.id, datetime.now(UTC) + timedelta(days=1)
    )
    resp = await anonymous.get(f"/api/surveys/link/{long_lived}")
    assert resp.status == 410 and (await resp.json())["code"] == "link_expired"
    assert await app[SURVEYS].expire_stale() == 1
    resp = await anonymous.post(f"/api/surveys/link/{long_lived}", json={"csat": 4})
    assert resp.status == 410
