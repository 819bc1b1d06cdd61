"""Account balances for the trading panels: the customer's own, or (for the agent of a
verified contact) the customer's, so the agent can prepare an operation."""

from __future__ import annotations

import logging

from aiohttp import web

from vbank.contact.service import Caller
from vbank.context import SERVICES
from vbank.http.access import RouteTable, roles
from vbank.http.middleware import principal_of
from vbank.http.problems import Problem
from vbank.roles import Role
from vbank.trading.operations import AccountView, OperationError

logger = logging.getLogger(__name__)

routes = RouteTable()


def _json(accounts: list[AccountView]) -> web.Response:
    return web.json_response(
        {
            "accounts": [
                {
                    "number": a.number,
                    "name": a.name,
                    "currency": a.currency,
                    "balance_minor": a.balance_minor,
                }
                for a in accounts
            ]
        },
        headers={"Cache-Control": "no-store"},
    )


async def _accounts(request: web.Request, contact_id: str | None) -> web.Response:
    principal = principal_of(request)
    trading = request.app[SERVICES].realtime.trading
    try:
        accounts = await trading.accounts(Caller(principal.user_id, principal.role), contact_id)
    except OperationError as exc:
        if exc.reason == "not_found":
            raise Problem(404, "not_found", exc.message) from None
        raise Problem(409, exc.reason, exc.message) from None
    return _json(accounts)


@routes.get("/api/accounts", roles(Role.CUSTOMER))
async def own_accounts(request: web.Request) -> web.Response:
    return await _accounts(request, None)


@routes.get("/api/contacts/{contact_id}/accounts", roles(Role.AGENT))
async def contact_accounts(request: web.Request) -> web.Response:
    return await _accounts(request, request.match_info["contact_id"])
