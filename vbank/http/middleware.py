"""Middlewares: problem+json errors, authentication and role checks, CSRF and Origin checks,
security headers.  Order (outermost first): errors → security headers → auth."""

from __future__ import annotations

import hmac
import logging
import uuid
from urllib.parse import urlsplit

from aiohttp import web

from vbank.auth.sessions import Principal, load_session
from vbank.context import SERVICES
from vbank.http.access import Handler
from vbank.http.problems import Problem, from_problem, problem_response

logger = logging.getLogger(__name__)

SESSION_COOKIE = "vbank_session"
CSRF_HEADER = "X-CSRF-Token"
PRINCIPAL = web.RequestKey("principal", Principal)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def principal_of(request: web.Request) -> Principal:
    """The signed-in caller; only valid on routes that are not public."""
    p: Principal | None = request.get(PRINCIPAL)
    if p is None:
        raise Problem(401, "unauthenticated", "sign in first")
    return p


def origin_allowed(request: web.Request) -> bool:
    """True when the request has no Origin (non-browser client) or one naming this server."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False
    public = request.app[SERVICES].settings.public_url
    if public and origin.rstrip("/") == public.rstrip("/"):
        return True
    return parts.netloc == request.host


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path == "/ws"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as exc:
        return from_problem(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or (not _is_api(request) and exc.status != 413):
            raise
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
            415: "unsupported_media_type",
        }.get(exc.status, "http_error")
        detail = exc.reason if exc.status != 413 else "request body is too large"
        return problem_response(exc.status, code, detail)
    except Exception:
        incident = uuid.uuid4().hex[:12]
        logger.exception(
            "unhandled error in %s %s (incident %s)", request.method, request.path, incident
        )
        return problem_response(500, "internal", f"internal error, incident {incident}")


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()")
    if request.path.startswith("/api/"):
        h.setdefault("Cache-Control", "no-store")
    return response


def _forbidden_page() -> web.Response:
    return web.Response(
        status=403, text="403: this page is not for your role", content_type="text/plain"
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    services = request.app[SERVICES]
    route_handler = request.match_info.route.handler
    access = services.access.get(route_handler)
    if access is None:
        # Static files and aiohttp's own 404/405 handlers are public by construction.
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    principal: Principal | None = None
    if token:
        async with services.db.reads() as session:  # no write lock for every request
            principal = await load_session(session, token)
    if principal is not None:
        request[PRINCIPAL] = principal
    if not access.public:
        if principal is None:
            if access.page:
                raise web.HTTPFound("/signin")
            raise Problem(401, "unauthenticated", "sign in first")
        if not access.admits(principal.role):
            logger.info("role %s refused on %s %s", principal.role, request.method, request.path)
            if access.page:
                return _forbidden_page()
            raise Problem(403, "forbidden", "your role may not do this")
    if request.method in UNSAFE_METHODS:
        if not origin_allowed(request):
            raise Problem(403, "bad_origin", "cross-origin request refused")
        if principal is not None and not access.public:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), principal.csrf_token.encode()):
                raise Problem(403, "csrf_failed", "missing or wrong CSRF token")
    return await handler(request)
