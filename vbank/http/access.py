"""Every route declares who may call it; a middleware enforces the declaration.

A route registered without a declaration cannot be added: the table refuses it, and the
role × route matrix test walks every declared route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from vbank.roles import ALL_ROLES, Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Access:
    """``public`` routes need no sign-in; otherwise the caller's role must be in ``roles``."""

    public: bool
    roles: frozenset[Role]
    page: bool = False  # HTML page: unauthenticated callers are redirected to sign-in

    def admits(self, role: Role | None) -> bool:
        return self.public or (role is not None and role in self.roles)


PUBLIC: Final = Access(True, frozenset())
SIGNED_IN: Final = Access(False, ALL_ROLES)


def roles(*allowed: Role, page: bool = False) -> Access:
    return Access(False, frozenset(allowed), page)


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    access: Access
    name: str


class RouteTable:
    """Collects (method, path, handler, access) and installs them on an application."""

    def __init__(self) -> None:
        self.specs: list[RouteSpec] = []

    def add(
        self, method: str, path: str, access: Access, name: str | None = None
    ) -> Callable[[Handler], Handler]:
        def deco(handler: Handler) -> Handler:
            self.specs.append(RouteSpec(method, path, handler, access, name or handler.__name__))
            return handler

        return deco

    def get(
        self, path: str, access: Access, name: str | None = None
    ) -> Callable[[Handler], Handler]:
        return self.add("GET", path, access, name)

    def post(
        self, path: str, access: Access, name: str | None = None
    ) -> Callable[[Handler], Handler]:
        return self.add("POST", path, access, name)

    def extend(self, others: Iterable[RouteTable]) -> None:
        for other in others:
            self.specs.extend(other.specs)

    def install(self, app: web.Application) -> dict[Handler, Access]:
        access: dict[Handler, Access] = {}
        for spec in self.specs:
            app.router.add_route(spec.method, spec.path, spec.handler, name=spec.name)
            access[spec.handler] = spec.access
        return access
