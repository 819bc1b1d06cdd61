"""The four roles of the service; every route and websocket message names which it admits."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    AUDITOR = "auditor"
    SUPERVISOR = "supervisor"


ALL_ROLES: frozenset[Role] = frozenset(Role)
STAFF: frozenset[Role] = frozenset({Role.AGENT, Role.AUDITOR, Role.SUPERVISOR})
