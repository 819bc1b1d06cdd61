"""Sign-in, sign-out, who-am-I, and the role home pages."""

from __future__ import annotations

import logging
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints

from audit.log import Actor, append
from vbank.auth import throttle
from vbank.auth.sessions import close_session, open_session
from vbank.auth.users import find_by_username
from vbank.context import SERVICES
from vbank.http.access import PUBLIC, SIGNED_IN, RouteTable, roles
from vbank.http.bodies import read_json
from vbank.http.middleware import SESSION_COOKIE, principal_of
from vbank.http.problems import Problem
from vbank.roles import Role

logger = logging.getLogger(__name__)

routes = RouteTable()

HOME = {role: f"/{role.value}" for role in Role}


class SigninBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _client_addr(request: web.Request) -> str:
    return request.remote or "unknown"


@routes.post("/api/auth/signin", PUBLIC)
async def signin(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    s = services.settings
    body = await read_json(request, SigninBody)
    user_key = throttle.throttle_key("user", body.username, s.secret_key)
    ip_key = throttle.throttle_key("ip", _client_addr(request), s.secret_key)
    async with services.db.transaction() as session:
        wait = await throttle.locked_for(session, [user_key, ip_key])
    if wait > 0:
        raise Problem(
            429,
            "throttled",
            f"too many failed sign-ins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    async with services.db.sessions() as session:
        user = await find_by_username(session, body.username)
        password_hash = user.password_hash if user is not None and not user.disabled else None
    ok = await services.passwords.verify_async(password_hash, body.password)
    async with services.db.transaction() as session:
        if not ok or user is None:
            await throttle.record_failure(
                session, [user_key], s.signin_max_failures, s.signin_lockout_s
            )
            await throttle.record_failure(
                session, [ip_key], s.signin_max_failures * 4, s.signin_lockout_s
            )
            await append(
                session,
                "auth.signin_failed",
                {"user_id": user.id if user else None, "reason": "bad_credentials"},
                actor=Actor(),
            )
            failed = True
        else:
            await throttle.record_success(session, [user_key])
            token, principal = await open_session(session, user, s.session_ttl_s)
            await append(
                session,
                "auth.signin",
                {"user_id": user.id},
                actor=Actor(user.id, user.role),
            )
            failed = False
    if failed:
        raise Problem(401, "invalid_credentials", "wrong username or password")
    response = web.json_response(
        {
            "user": principal.public(),
            "csrf_token": principal.csrf_token,
            "home": HOME[principal.role],
        }
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=s.cookie_secure or request.secure,
        max_age=s.session_ttl_s,
        path="/",
    )
    return response


@routes.post("/api/auth/signout", SIGNED_IN)
async def signout(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    p = principal_of(request)
    async with services.db.transaction() as session:
        await close_session(session, p.token_hash)
        await append(
            session, "auth.signout", {"user_id": p.user_id}, actor=Actor(p.user_id, p.role)
        )
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.get("/api/auth/me", SIGNED_IN)
async def me(request: web.Request) -> web.Response:
    p = principal_of(request)
    return web.json_response({"user": p.public(), "csrf_token": p.csrf_token, "home": HOME[p.role]})


def _page(request: web.Request, name: str) -> web.FileResponse:
    web_dir = request.app[SERVICES].settings.web_dir
    return web.FileResponse(web_dir / f"{name}.html", headers={"Cache-Control": "no-store"})


@routes.get("/", PUBLIC, name="root")
async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/signin")


@routes.get("/signin", PUBLIC)
async def signin_page(request: web.Request) -> web.StreamResponse:
    return _page(request, "signin")


@routes.get("/customer", roles(Role.CUSTOMER, page=True))
async def customer_page(request: web.Request) -> web.StreamResponse:
    return _page(request, "customer")


@routes.get("/agent", roles(Role.AGENT, page=True))
async def agent_page(request: web.Request) -> web.StreamResponse:
    return _page(request, "agent")


@routes.get("/auditor", roles(Role.AUDITOR, page=True))
async def auditor_page(request: web.Request) -> web.StreamResponse:
    return _page(request, "auditor")


@routes.get("/supervisor", roles(Role.SUPERVISOR, page=True))
async def supervisor_page(request: web.Request) -> web.StreamResponse:
    return _page(request, "supervisor")
