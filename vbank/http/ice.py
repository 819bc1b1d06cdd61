"""ICE servers for the browsers: STUN and TURN from configuration, with per-user,
time-limited TURN credentials (TURN REST scheme) so no long-lived secret reaches a browser."""

from __future__ import annotations

import logging

from aiohttp import web

from signaling.media import IceConfig, browser_ice_servers
from vbank.config import Settings
from vbank.context import SERVICES
from vbank.http.access import RouteTable, roles
from vbank.http.middleware import principal_of
from vbank.roles import Role

logger = logging.getLogger(__name__)

routes = RouteTable()


def ice_config(settings: Settings) -> IceConfig | None:
    if not settings.stun_urls and not settings.turn_urls:
        return None
    return IceConfig(
        stun_urls=settings.stun_urls,
        turn_urls=settings.turn_urls,
        turn_secret=settings.turn_secret or None,
    )


@routes.get("/api/ice", roles(Role.CUSTOMER, Role.AGENT))
async def ice_servers(request: web.Request) -> web.Response:
    config = ice_config(request.app[SERVICES].settings)
    if config is None:
        return web.json_response({"iceServers": []})
    user = principal_of(request)
    return web.json_response({"iceServers": browser_ice_servers(config, str(user.user_id))})
