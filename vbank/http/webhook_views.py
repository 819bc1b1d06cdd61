"""Webhook administration for supervisors: endpoints, secrets, dead letters.

A new secret is in the answer to its creation only; lists never show secrets.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from audit.log import Actor
from vbank.context import SERVICES
from vbank.evidence import keyring_from_settings
from vbank.http.access import RouteTable, roles
from vbank.http.bodies import read_json
from vbank.http.middleware import principal_of
from vbank.http.problems import Problem
from vbank.roles import Role
from vbank.webhooks import endpoints
from vbank.webhooks.outbox import EVENT_TYPES

logger = logging.getLogger(__name__)

routes = RouteTable()
SUPERVISOR = roles(Role.SUPERVISOR)


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    event_types: Annotated[list[str], Field(min_length=1, max_length=len(EVENT_TYPES))]
    allow_private: bool = False


class Disable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str | None, Field(max_length=64, pattern=r"^[a-z0-9_]+$")] = None


def _actor(request: web.Request) -> Actor:
    return Actor(principal_of(request).user_id, Role.SUPERVISOR.value)


def _id(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise Problem(404, "not_found", "no such item") from None
    if not 0 < value < 2**31:
        raise Problem(404, "not_found", "no such item")
    return value


@asynccontextmanager
async def _change(request: web.Request) -> AsyncIterator[AsyncSession]:
    """One transaction for a management action; a refusal becomes a problem answer."""
    try:
        async with request.app[SERVICES].db.transaction() as session:
            yield session
    except endpoints.WebhookError as exc:
        raise Problem(exc.status, exc.code, exc.message) from None


@routes.get("/api/webhooks/endpoints", SUPERVISOR)
async def list_endpoints(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db.sessions() as session:
        views = await endpoints.view(session)
    return web.json_response(
        {"endpoints": [v.public() for v in views], "event_types": list(EVENT_TYPES)}
    )


@routes.post("/api/webhooks/endpoints", SUPERVISOR)
async def create_endpoint(request: web.Request) -> web.Response:
    body = await read_json(request, NewEndpoint)
    services = request.app[SERVICES]
    async with _change(request) as session:
        view, secret = await endpoints.create(
            session,
            keyring_from_settings(services.settings),
            url=body.url,
            event_types=body.event_types,
            allow_private=body.allow_private,
            actor=_actor(request),
        )
    return web.json_response({"endpoint": view.public(), "secret": secret}, status=201)


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    endpoint_id = _id(request, "endpoint_id")
    reason = None if enabled else (await read_json(request, Disable)).reason
    async with _change(request) as session:
        view = await endpoints.set_enabled(
            session, endpoint_id, enabled, actor=_actor(request), reason=reason
        )
    return web.json_response({"endpoint": view.public()})


@routes.post("/api/webhooks/endpoints/{endpoint_id}/disable", SUPERVISOR)
async def disable_endpoint(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


@routes.post("/api/webhooks/endpoints/{endpoint_id}/enable", SUPERVISOR)
async def enable_endpoint(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)


@routes.add("DELETE", "/api/webhooks/endpoints/{endpoint_id}", SUPERVISOR)
async def delete_endpoint(request: web.Request) -> web.Response:
    endpoint_id = _id(request, "endpoint_id")
    async with _change(request) as session:
        await endpoints.remove(session, endpoint_id, actor=_actor(request))
    return web.Response(status=204)


@routes.post("/api/webhooks/endpoints/{endpoint_id}/secrets", SUPERVISOR)
async def rotate_secret(request: web.Request) -> web.Response:
    endpoint_id = _id(request, "endpoint_id")
    services = request.app[SERVICES]
    async with _change(request) as session:
        secret_id, secret = await endpoints.rotate_secret(
            session,
            keyring_from_settings(services.settings),
            endpoint_id,
            actor=_actor(request),
        )
    return web.json_response({"secret_id": secret_id, "secret": secret}, status=201)


@routes.add("DELETE", "/api/webhooks/endpoints/{endpoint_id}/secrets/{secret_id}", SUPERVISOR)
async def remove_secret(request: web.Request) -> web.Response:
    endpoint_id, secret_id = _id(request, "endpoint_id"), _id(request, "secret_id")
    async with _change(request) as session:
        await endpoints.remove_secret(session, endpoint_id, secret_id, actor=_actor(request))
    return web.Response(status=204)


@routes.get("/api/webhooks/dead-letters", SUPERVISOR)
async def dead_letters(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db.sessions() as session:
        items = await endpoints.dead_letters(session)
    return web.json_response({"dead_letters": items})


@routes.post("/api/webhooks/dead-letters/{delivery_id}/redeliver", SUPERVISOR)
async def redeliver(request: web.Request) -> web.Response:
    delivery_id = _id(request, "delivery_id")
    async with _change(request) as session:
        await endpoints.redeliver(session, delivery_id, actor=_actor(request))
    return web.json_response({"id": delivery_id, "state": "pending"}, status=202)
