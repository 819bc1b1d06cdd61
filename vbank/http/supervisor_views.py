"""The supervisor dashboard's API: a live overview (queues and agents, polled by the page)
and statistics per agent, skill and day over a period of calendar days.

Supervisors see agents' display names and aggregate figures only, never a customer's
name or a contact's content, so these reads are not audit events.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from aiohttp import web

from vbank.contact.service import SKILLS
from vbank.context import SERVICES
from vbank.http.access import RouteTable, roles
from vbank.http.problems import Problem
from vbank.roles import Role
from vbank.supervision import queries
from vbank.supervision.live import agent_rows, queue_cards
from vbank.supervision.period import Period, PeriodError, parse_period
from vbank.supervision.stats import Report, compute

logger = logging.getLogger(__name__)

routes = RouteTable()
SUPERVISORS: Final = roles(Role.SUPERVISOR)


def _skills(known: frozenset[str]) -> list[str]:
    """The router's skills in the product's order (any others after, sorted)."""
    return [s for s in SKILLS if s in known] + sorted(known - set(SKILLS))


@routes.get("/api/supervisor/overview", SUPERVISORS)
async def overview(request: web.Request) -> web.StreamResponse:
    """Queues per skill and every agent's state, as the router sees them now."""
    services = request.app[SERVICES]
    contacts = services.realtime.contacts
    router = contacts.router
    async with services.db.sessions() as session:
        directory = await queries.agent_directory(session)
    now = contacts.clock()
    live_agents = router.agents()
    body = {
        "at": datetime.fromtimestamp(now).astimezone().isoformat(),
        "queues": queue_cards(
            _skills(router.skills),
            router.queued(),
            live_agents,
            now=now,
            avg_wait_s=router.wait_time_s,
        ),
        "agents": agent_rows(directory, live_agents),
    }
    return web.json_response(body)


def _period(request: web.Request) -> Period:
    settings = request.app[SERVICES].settings
    tz = ZoneInfo(settings.stats_timezone)
    try:
        return parse_period(
            request.query.get("from", "").strip() or None,
            request.query.get("to", "").strip() or None,
            today=datetime.now(tz).date(),
            tz=tz,
            max_days=max(1, settings.stats_max_days),
        )
    except PeriodError as exc:
        raise Problem(400, "invalid_request", str(exc)) from None


def _report_json(report: Report, names: dict[int, str]) -> dict[str, Any]:
    period = report.period
    agents = sorted(report.agents.items(), key=lambda kv: (names.get(kv[0], ""), kv[0]))
    return {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "timezone": str(period.tz),
        "total": report.total.metrics(),
        "agents": [
            {"agent_id": agent_id, "name": names.get(agent_id, f"#{agent_id}"), **t.metrics()}
            for agent_id, t in agents
        ],
        "skills": [{"skill": skill, **t.metrics()} for skill, t in report.skills.items()],
        "days": [{"day": day.isoformat(), **t.metrics()} for day, t in report.days.items()],
    }


@routes.get("/api/supervisor/stats", SUPERVISORS)
async def stats(request: web.Request) -> web.StreamResponse:
    """Figures of ``from``..``to`` (local days, inclusive; default the last seven)."""
    period = _period(request)
    services = request.app[SERVICES]
    async with services.db.sessions() as session:
        rows = await queries.load_rows(session, period)
    # A long period can hold a few hundred thousand rows (~0.3 s of arithmetic): off the loop.
    report = await asyncio.to_thread(
        compute,
        period,
        rows.contacts,
        rows.verifications,
        rows.surveys,
        skills=_skills(services.realtime.contacts.router.skills),
    )
    async with services.db.sessions() as session:
        names = await queries.display_names(session, report.agents)
    return web.json_response(_report_json(report, names))
