"""The aiohttp application factory: wires settings, database, routes and middlewares."""

from __future__ import annotations

import gc
import logging
import weakref

from aiohttp import web

from audit import signing
from audit.checkpoints import Checkpointer
from signaling.hub import Hub
from signaling.media import MediaConfig, MediaManager, server_ice_servers
from vbank.auth.passwords import Passwords
from vbank.calls import Calls
from vbank.config import Settings
from vbank.contact.service import ContactService
from vbank.context import SERVICES, Services
from vbank.db import Database
from vbank.evidence import EvidenceStore
from vbank.http import (
    auditor_views,
    auth_views,
    health,
    ice,
    supervisor_views,
    survey_views,
    trading_views,
    verify_views,
    webhook_views,
    ws,
)
from vbank.http.access import RouteTable
from vbank.http.ice import ice_config
from vbank.http.middleware import auth_middleware, error_middleware, security_headers_middleware
from vbank.realtime import Realtime
from vbank.trading.service import TradingService
from vbank.verification import Verifier
from vbank.webhooks import worker as webhook_worker

logger = logging.getLogger(__name__)

CHECKPOINTER = web.AppKey("audit_checkpointer", Checkpointer)
WEBHOOK_WORKER = web.AppKey("webhook_worker", webhook_worker.Worker)

ROUTE_TABLES = (
    health.routes,
    auth_views.routes,
    ws.routes,
    ice.routes,
    verify_views.routes,
    auditor_views.routes,
    supervisor_views.routes,
    survey_views.routes,
    webhook_views.routes,
    trading_views.routes,
)


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
    hub = Hub()
    ice = ice_config(settings)
    media = MediaManager(MediaConfig(), ice_servers=lambda: server_ice_servers(ice) if ice else ())
    evidence = EvidenceStore.from_settings(settings)
    calls = Calls(services.db, hub, media, settings.data_dir / "recordings", evidence.keyring)
    contacts = ContactService(
        services.db,
        grace_s=settings.agent_grace_s,
        chat_in_process=settings.chat_writer == "process",
    )
    verifier = Verifier(
        services.db,
        hub,
        calls,
        evidence,
        steps=settings.verify_steps,
        fixed_steps=settings.verify_fixed_steps,
        time_limit_s=settings.verify_time_limit_s,
    )
    trading = TradingService.from_settings(services.db, settings)
    services.realtime = Realtime(contacts, hub, calls, verifier, trading)
    app[SERVICES] = services
    app[CHECKPOINTER] = Checkpointer.from_settings(services.db, settings)
    app[ws.SOCKETS] = weakref.WeakSet()
    if settings.webhook_worker:
        app[WEBHOOK_WORKER] = webhook_worker.from_settings(services.db, settings)
    table = RouteTable()
    table.extend(ROUTE_TABLES)
    services.access = table.install(app)
    survey_views.setup(app, services.db, settings)  # surveys + their link scheduler
    app.router.add_static("/static/", settings.web_dir / "static", name="static")
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


FULL_COLLECTION_EVERY = 100


def settle_heap() -> None:
    """Collect once, then keep what is alive now (the imported libraries, the app) out of
    every later collection: a full collection otherwise rescans them each time, and it
    runs on the event loop (1,000 chat clients: the longest pause went from 226 to
    134 ms, the collector's total time halved).  Call it once, before serving."""
    gc.collect()
    gc.freeze()
    # and a full collection every 100 young-generation passes, not 10: each still scans
    # every connection's objects (about 110 ms with 1,000 clients, every 2-3 s at load)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


async def _on_startup(app: web.Application) -> None:
    await app[SERVICES].realtime.start()
    signing.install(app[CHECKPOINTER].keys)
    await app[CHECKPOINTER].start()
    if WEBHOOK_WORKER in app:
        await app[WEBHOOK_WORKER].start()


async def _on_shutdown(app: web.Application) -> None:
    services = app[SERVICES]
    services.shutting_down = True
    await ws.close_all(app)
    await services.realtime.stop()
    if WEBHOOK_WORKER in app:
        await app[WEBHOOK_WORKER].stop()  # finishes the requests in flight
    await app[CHECKPOINTER].stop()  # after the last events: a shutdown checkpoint


async def _on_cleanup(app: web.Application) -> None:
    await app[SERVICES].db.close()
    logger.info("database closed")
