"""The per-user websocket: authenticated, Origin-checked, size-limited.

The chat and signalling protocol (``signaling/protocol.py``) is served here; the
foundation answers pings and refuses everything else with a typed error.
"""

from __future__ import annotations

import json
import logging
import weakref

from aiohttp import WSCloseCode, WSMsgType, web

from vbank.http.access import SIGNED_IN, RouteTable
from vbank.http.middleware import origin_allowed, principal_of
from vbank.http.problems import Problem

logger = logging.getLogger(__name__)

routes = RouteTable()

MAX_FRAME_BYTES = 64 * 1024
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("websockets")


def _error(code: str, message: str) -> str:
    return json.dumps({"v": 1, "type": "error", "code": code, "message": message})


@routes.get("/ws", SIGNED_IN)
async def websocket(request: web.Request) -> web.WebSocketResponse:
    principal = principal_of(request)
    if not origin_allowed(request):
        logger.info("websocket refused: foreign origin (user %s)", principal.user_id)
        raise Problem(403, "bad_origin", "cross-origin websocket refused")
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_FRAME_BYTES)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                await ws.send_str(_error("bad_json", "send JSON text frames"))
                continue
            try:
                data = json.loads(msg.data)
            except json.JSONDecodeError:
                await ws.send_str(_error("bad_json", "the message is not valid JSON"))
                continue
            if isinstance(data, dict) and data.get("type") == "ping":
                await ws.send_str(json.dumps({"v": 1, "type": "pong"}))
            else:
                await ws.send_str(_error("unknown_type", "unknown message type"))
    finally:
        sockets.discard(ws)
    return ws


async def close_all(app: web.Application) -> None:
    sockets = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
