"""Reading request bodies into pydantic models with clear 4xx errors."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from vbank.http.problems import Problem

M = TypeVar("M", bound=BaseModel)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def read_json(request: web.Request, model: type[M]) -> M:
    """Parse the JSON body into ``model`` or raise a 400/413/415 problem."""
    if request.content_type != "application/json":
        raise Problem(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()  # bounded by the application's client_max_size
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise Problem(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Problem(400, "invalid_request", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(400, "invalid_request", _describe(exc)) from None
