"""Walk every route × every role (and anonymous): the declared access is what is enforced."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import MakeUser, signin
from vbank.context import SERVICES
from vbank.http.access import RouteSpec
from vbank.roles import Role


def _specs(app: web.Application) -> list[RouteSpec]:
    from vbank.app import ROUTE_TABLES

    return [spec for table in ROUTE_TABLES for spec in table.specs]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_declares_its_roles(app: web.Application) -> None:
    access = app[SERVICES].access
    for route in app.router.routes():
        if isinstance(route.resource, web.StaticResource):
            continue
        if route.method == "HEAD":
            continue
        assert route.handler in access, f"{route.method} {route.resource} declares no roles"


async def test_role_route_matrix(
    aiohttp_client: Any, app: web.Application, make_user: MakeUser
) -> None:
    users = {
        Role.CUSTOMER: "cust",
        Role.AGENT: "agnt",
        Role.AUDITOR: "audi",
        Role.SUPERVISOR: "supe",
    }
    for role, name in users.items():
        await make_user(name, role)
    specs = _specs(app)
    assert len(specs) >= 10
    checked = 0
    for spec in specs:
        path = _concrete(spec.path)
        for role in [None, *users]:
            client: TestClient[Any, Any] = await aiohttp_client(app)
            headers = {}
            if role is not None:
                headers["X-CSRF-Token"] = await signin(client, users[role])
            resp = await client.request(
                spec.method, path, headers=headers, allow_redirects=False, json={}
            )
            admitted = spec.access.admits(role)
            where = f"{spec.method} {spec.path} as {role}"
            if admitted:
                assert resp.status not in (401, 403), where
            elif role is None:
                if spec.access.page:
                    assert resp.status == 302 and resp.headers["Location"] == "/signin", where
                else:
                    assert resp.status == 401, where
                    assert (await resp.json())["code"] == "unauthenticated"
            else:
                assert resp.status == 403, where
                if not spec.access.page:
                    assert (await resp.json())["code"] == "forbidden", where
            checked += 1
            await client.close()
    assert checked == len(specs) * 5
