"""The per-user websocket: authenticated, Origin-checked, size- and rate-limited.

Frames are parsed by ``signaling.protocol`` and run by :class:`vbank.realtime.Realtime`.
A bad frame gets a typed ``error`` frame and the connection goes on; a client that keeps
flooding is disconnected (1008); nothing a client sends can stop other connections.
"""

from __future__ import annotations

import logging
import weakref

from aiohttp import WSCloseCode, WSMsgType, web

from signaling.protocol import (
    DEFAULT_MAX_BYTES,
    ErrorCode,
    ErrorMessage,
    ProtocolError,
    parse_client_message,
    serialize_server_message,
)
from signaling.ratelimit import (
    DEFAULT_BYTE_LIMIT,
    DEFAULT_FRAME_LIMIT,
    DEFAULT_STRIKE_LIMIT,
    DEFAULT_TYPE_LIMITS,
    FloodGuard,
    Limit,
    Verdict,
)
from vbank.contact.service import Caller
from vbank.context import SERVICES
from vbank.http.access import SIGNED_IN, RouteTable
from vbank.http.middleware import origin_allowed, principal_of
from vbank.http.problems import Problem

logger = logging.getLogger(__name__)

routes = RouteTable()

MAX_FRAME_BYTES = DEFAULT_MAX_BYTES
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("websockets")


def flood_guard(scale: float) -> FloodGuard:
    """Per-connection limits; ``scale`` (VBANK_WS_RATE_SCALE) raises them for load tests."""
    if scale == 1.0:
        return FloodGuard()

    def scaled(limit: Limit) -> Limit:
        return Limit(limit.rate * scale, limit.burst * scale)

    return FloodGuard(
        frame_limit=scaled(DEFAULT_FRAME_LIMIT),
        byte_limit=scaled(DEFAULT_BYTE_LIMIT),
        type_limits={k: scaled(v) for k, v in DEFAULT_TYPE_LIMITS.items()},
        strike_limit=scaled(DEFAULT_STRIKE_LIMIT),
    )


async def _send_error(ws: web.WebSocketResponse, exc: ProtocolError) -> None:
    if not ws.closed:
        await ws.send_str(serialize_server_message(exc.to_message()))


@routes.get("/ws", SIGNED_IN)
async def websocket(request: web.Request) -> web.WebSocketResponse:
    principal = principal_of(request)
    if not origin_allowed(request):
        logger.info("websocket refused: foreign origin (user %s)", principal.user_id)
        raise Problem(403, "bad_origin", "cross-origin websocket refused")
    services = request.app[SERVICES]
    realtime = services.realtime
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_FRAME_BYTES)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    caller = Caller(principal.user_id, principal.role)
    guard = flood_guard(services.settings.ws_rate_scale)
    await realtime.connected(caller, ws)
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                await _send_error(ws, ProtocolError(ErrorCode.BAD_JSON, "send JSON text frames"))
                continue
            verdict = guard.admit_frame(len(msg.data))
            if verdict is Verdict.ALLOW:
                try:
                    message = parse_client_message(msg.data, max_bytes=MAX_FRAME_BYTES)
                    verdict = guard.admit_message(message.type)
                    if verdict is Verdict.ALLOW:
                        await realtime.handle(caller, message, ws)
                except ProtocolError as exc:
                    await _send_error(ws, exc)
                except Exception as exc:
                    if isinstance(exc, ConnectionError) and services.shutting_down:
                        # queued work is refused while shutting down: expected, not an error
                        logger.info("message dropped at shutdown (user %s)", caller.user_id)
                        break
                    logger.exception("websocket message failed (user %s)", caller.user_id)
                    await _send_error(ws, ProtocolError(ErrorCode.INTERNAL, "internal error"))
            if verdict is Verdict.REJECT:
                wait = guard.retry_after()
                await _send_error(
                    ws, ProtocolError(ErrorCode.RATE_LIMITED, f"slow down; retry in {wait:.1f} s")
                )
            elif verdict is Verdict.DISCONNECT:
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"flooding")
                break
    finally:
        sockets.discard(ws)
        realtime.disconnected(caller, ws)
    return ws


async def close_all(app: web.Application) -> None:
    sockets = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


__all__ = ["SOCKETS", "ErrorMessage", "close_all", "routes"]
