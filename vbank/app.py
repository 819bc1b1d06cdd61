"""The aiohttp application factory: wires settings, database, routes and middlewares."""

from __future__ import annotations

import logging
import weakref

from aiohttp import web

from vbank.auth.passwords import Passwords
from vbank.config import Settings
from vbank.context import SERVICES, Services
from vbank.db import Database
from vbank.http import auth_views, health, ws
from vbank.http.access import RouteTable
from vbank.http.middleware import auth_middleware, error_middleware, security_headers_middleware

logger = logging.getLogger(__name__)

ROUTE_TABLES = (health.routes, auth_views.routes, ws.routes)


def create_app(settings: Settings, db: Database | None = None) -> web.Application:
    """Build the application; the database is opened here unless one is given (tests)."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware, security_headers_middleware, auth_middleware],
    )
    services = Services(
        settings=settings,
        db=db or Database(settings.database_url),
        passwords=Passwords(settings.password_time_cost, settings.password_memory_kib),
    )
    app[SERVICES] = services
    app[ws.SOCKETS] = weakref.WeakSet()
    table = RouteTable()
    table.extend(ROUTE_TABLES)
    services.access = table.install(app)
    app.router.add_static("/static/", settings.web_dir / "static", name="static")
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


async def _on_shutdown(app: web.Application) -> None:
    services = app[SERVICES]
    services.shutting_down = True
    await ws.close_all(app)


async def _on_cleanup(app: web.Application) -> None:
    await app[SERVICES].db.close()
    logger.info("database closed")
