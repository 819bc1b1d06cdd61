"""The survey package's one error (a request it cannot honour, named by a code the HTTP
layer maps to a status) and its one way to change a row only if it is still as expected."""

from __future__ import annotations

from sqlalchemy import Update
from sqlalchemy.ext.asyncio import AsyncSession


class SurveyError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def changed_one(session: AsyncSession, stmt: Update) -> bool:
    """Run a conditional ``UPDATE … WHERE <expected state>``; True if it changed the row.

    Of two transactions (or processes) racing for the same row exactly one gets True.
    """
    result = await session.execute(stmt.execution_options(synchronize_session=False))
    return getattr(result, "rowcount", 0) == 1
