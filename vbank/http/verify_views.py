"""Snapshots of a verification attempt (reference and best live frame), for its agent."""

from __future__ import annotations

import logging

from aiohttp import web

from signaling.protocol import ProtocolError
from vbank.contact.service import Caller
from vbank.context import SERVICES
from vbank.http.access import RouteTable, roles
from vbank.http.middleware import principal_of
from vbank.http.problems import Problem
from vbank.roles import Role

logger = logging.getLogger(__name__)

routes = RouteTable()


@routes.get("/api/verifications/{attempt_id}/snapshot/{kind}", roles(Role.AGENT))
async def snapshot(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    if kind not in ("reference", "live"):
        raise Problem(404, "not_found", "no such snapshot")
    principal = principal_of(request)
    verifier = request.app[SERVICES].realtime.verifier
    try:
        data = await verifier.snapshot(
            Caller(principal.user_id, principal.role), request.match_info["attempt_id"], kind
        )
    except ProtocolError as exc:
        raise Problem(404, "not_found", exc.message) from None
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})
