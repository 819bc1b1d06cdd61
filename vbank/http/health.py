"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from vbank.context import SERVICES
from vbank.http.access import PUBLIC, RouteTable

logger = logging.getLogger(__name__)

routes = RouteTable()


@routes.get("/healthz", PUBLIC)
async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz", PUBLIC)
async def readyz(request: web.Request) -> web.Response:
    """Ready to take traffic: the database answers and we are not shutting down."""
    services = request.app[SERVICES]
    if services.shutting_down:
        return web.json_response({"status": "shutting_down"}, status=503)
    try:
        await asyncio.wait_for(services.db.ping(), timeout=2)
    except Exception as exc:
        logger.warning("readiness: database check failed: %s", type(exc).__name__)
        return web.json_response({"status": "unavailable", "database": "down"}, status=503)
    return web.json_response({"status": "ready", "database": "ok"})
