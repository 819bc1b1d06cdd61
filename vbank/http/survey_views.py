"""Survey and follow-up routes: the customer's survey card, the public signed-link page and
its API, and the agent's follow-up call tasks.

The link routes are public: the token is the credential.  They keep the middleware's
Origin check for POST, and take JSON only, which a foreign form cannot send without a
CORS preflight we never grant; a refusal names only the link's own problem.
"""

from __future__ import annotations

import logging
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vbank.config import Settings
from vbank.context import SERVICES
from vbank.db import Database
from vbank.http.access import PUBLIC, RouteTable, roles
from vbank.http.bodies import read_json
from vbank.http.middleware import principal_of
from vbank.http.problems import Problem
from vbank.roles import Role
from vbank.surveys.errors import SurveyError
from vbank.surveys.followups import Followups
from vbank.surveys.models import MAX_COMMENT, MAX_NOTE, Outcome
from vbank.surveys.scheduler import SurveyScheduler
from vbank.surveys.service import Answer, Surveys, survey_view

logger = logging.getLogger(__name__)

routes = RouteTable()

SURVEYS = web.AppKey("surveys", Surveys)
FOLLOWUPS = web.AppKey("followups", Followups)
SURVEY_SCHEDULER = web.AppKey("survey_scheduler", SurveyScheduler)

_STATUS = {
    "not_found": 404,
    "invalid_link": 400,
    "already_answered": 409,
    "already_claimed": 409,
    "not_claimed": 409,
    "already_closed": 409,
    "not_yours": 403,
    "expired": 410,
    "link_expired": 410,
}


def setup(app: web.Application, db: Database, settings: Settings) -> None:
    """Create the survey services and run the scheduler with the application."""
    surveys = Surveys(db, settings)
    app[SURVEYS] = surveys
    app[FOLLOWUPS] = Followups(db)
    app[SURVEY_SCHEDULER] = SurveyScheduler(surveys)
    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)


async def _start(app: web.Application) -> None:
    await app[SURVEY_SCHEDULER].start()


async def _stop(app: web.Application) -> None:
    await app[SURVEY_SCHEDULER].stop()


def _problem(exc: SurveyError) -> Problem:
    return Problem(_STATUS.get(exc.code, 400), exc.code, exc.message)


def _optional_text(value: str | None) -> str | None:
    value = value.strip() if value is not None else None
    return value or None


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csat: Annotated[int, Field(strict=True, ge=1, le=5)]
    nps: Annotated[int | None, Field(strict=True, ge=0, le=10)] = None
    comment: Annotated[str | None, Field(max_length=MAX_COMMENT)] = None

    _comment = field_validator("comment")(_optional_text)

    def answer(self) -> Answer:
        return Answer(self.csat, self.nps, self.comment)


class CloseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    note: Annotated[str | None, Field(max_length=MAX_NOTE)] = None

    _note = field_validator("note")(_optional_text)


# ---------------------------------------------------------------------- customer


@routes.get("/api/surveys/pending", roles(Role.CUSTOMER))
async def pending_survey(request: web.Request) -> web.Response:
    contact_id = request.query.get("contact_id") or None
    if contact_id is not None and len(contact_id) > 64:
        raise Problem(400, "invalid_request", "contact_id is too long")
    survey = await request.app[SURVEYS].pending(principal_of(request).user_id, contact_id)
    return web.json_response({"survey": survey_view(survey) if survey else None})


@routes.post("/api/surveys/{survey_id}", roles(Role.CUSTOMER))
async def answer_survey(request: web.Request) -> web.Response:
    body = await read_json(request, AnswerBody)
    try:
        survey = await request.app[SURVEYS].answer_on_page(
            principal_of(request).user_id, request.match_info["survey_id"], body.answer()
        )
    except SurveyError as exc:
        raise _problem(exc) from None
    return web.json_response({"survey": survey_view(survey)})


# ---------------------------------------------------------------------- signed link


@routes.get("/survey", PUBLIC)
async def survey_page(request: web.Request) -> web.StreamResponse:
    """The page a link opens; it reads the token from the fragment and calls the API."""
    web_dir = request.app[SERVICES].settings.web_dir
    return web.FileResponse(web_dir / "survey.html", headers={"Cache-Control": "no-store"})


@routes.get("/api/surveys/link/{token}", PUBLIC)
async def link_survey(request: web.Request) -> web.Response:
    try:
        survey = await request.app[SURVEYS].by_link(request.match_info["token"])
    except SurveyError as exc:
        raise _problem(exc) from None
    return web.json_response({"survey": {"skill": survey.skill, "state": survey.state}})


@routes.post("/api/surveys/link/{token}", PUBLIC)
async def answer_link(request: web.Request) -> web.Response:
    body = await read_json(request, AnswerBody)
    try:
        survey = await request.app[SURVEYS].answer_by_link(
            request.match_info["token"], body.answer()
        )
    except SurveyError as exc:
        raise _problem(exc) from None
    return web.json_response({"survey": {"skill": survey.skill, "state": survey.state}})


# ---------------------------------------------------------------------- agent follow-ups


@routes.get("/api/followups", roles(Role.AGENT))
async def list_followups(request: web.Request) -> web.Response:
    agent_id = principal_of(request).user_id
    tasks = await request.app[FOLLOWUPS].for_agent(agent_id)
    return web.json_response({"tasks": [t.to_json(agent_id) for t in tasks]})


@routes.post("/api/followups/{task_id}/claim", roles(Role.AGENT))
async def claim_followup(request: web.Request) -> web.Response:
    agent_id = principal_of(request).user_id
    try:
        view = await request.app[FOLLOWUPS].claim(agent_id, request.match_info["task_id"])
    except SurveyError as exc:
        raise _problem(exc) from None
    return web.json_response({"task": view.to_json(agent_id)})


@routes.post("/api/followups/{task_id}/close", roles(Role.AGENT))
async def close_followup(request: web.Request) -> web.Response:
    agent_id = principal_of(request).user_id
    body = await read_json(request, CloseBody)
    try:
        view = await request.app[FOLLOWUPS].close(
            agent_id, request.match_info["task_id"], body.outcome, body.note
        )
    except SurveyError as exc:
        raise _problem(exc) from None
    return web.json_response({"task": view.to_json(agent_id)})
