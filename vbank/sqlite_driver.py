"""SQLAlchemy's aiosqlite driver with one trip to aiosqlite's thread per statement.

Why: aiosqlite runs every call on the connection in its own thread, and SQLAlchemy's
adapter makes four calls per statement (open a cursor, execute, fetch, close), so a read
session with one ``SELECT`` by primary key took nine trips (the ``BEGIN`` costs four too,
the rollback one) at about 150 µs of CPU each: 1.6 ms a session, where SQLite's own work
was a few µs. A ``hello`` after a reconnect reads a dozen times, so 1,000 clients coming
back after a restart took about 18 s to be served against 0.7 s for a bare relay.

:class:`OneTripCursor` does cursor, execute, fetch and close in one call in the thread
and keeps the rows, the description, the row count and the last row id, which is all
SQLAlchemy asks of a client-side cursor. Server-side cursors (``stream()``) stay as they
were.

Everything here reaches below the two libraries' public APIs: SQLAlchemy's
``AsyncAdapt_aiosqlite_*`` adapter classes and aiosqlite's ``Connection._execute`` and
``_conn``. So it is kept to this module, used only for the versions it was written
against (:func:`supported`; otherwise the stock driver runs, more slowly), and
``tests/foundation/test_sqlite_driver.py`` fails if a statement takes more than one trip.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from types import ModuleType
from typing import Any, cast

import aiosqlite
import sqlalchemy
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

logger = logging.getLogger(__name__)

#: the versions whose internals this module was written against and tested with
PINNED = {"aiosqlite": "0.22.", "sqlalchemy": "2.1."}

_Description = tuple[tuple[Any, ...], ...] | None
_Result = tuple[_Description, list[Any], int, int | None, bool]


def supported(
    aiosqlite_version: str = aiosqlite.__version__,
    sqlalchemy_version: str = sqlalchemy.__version__,
) -> bool:
    """Whether the installed aiosqlite and SQLAlchemy are the ones pinned here."""
    return aiosqlite_version.startswith(PINNED["aiosqlite"]) and sqlalchemy_version.startswith(
        PINNED["sqlalchemy"]
    )


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Result:
    """The whole statement, in aiosqlite's thread; also whether a transaction is open."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid, conn.in_transaction
    finally:
        cursor.close()


def _end(conn: sqlite3.Connection, commit: bool) -> bool:
    """Commit or roll back, in aiosqlite's thread; whether a transaction is still open."""
    if commit:
        conn.commit()
    else:
        conn.rollback()
    return conn.in_transaction


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose statement is one call in aiosqlite's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")
    _awaitable_cursor_close = False  # nothing stays open in the thread

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # no aiosqlite cursor is opened (the stock __init__ spends a trip on one)
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = deque()
        self._description: _Description = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _trip(self, operation: Any, parameters: Any, many: bool) -> None:
        connection: Any = self._connection  # aiosqlite.Connection
        adapt = cast("OneTripConnection", self._adapt_connection)
        async with adapt._execute_mutex:
            try:
                result: _Result = await connection._execute(
                    _run, connection._conn, operation, parameters, many
                )
            except BaseException:
                adapt._in_transaction = True  # not known: the next rollback runs
                raise
        self._description, rows, self._rowcount, self._lastrowid, open_ = result
        adapt._in_transaction = open_
        self._rows = deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._trip(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> None:
        await self._trip(operation, seq_of_parameters, True)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's adapted aiosqlite connection, handing out :class:`OneTripCursor`.

    It knows whether SQLite has a transaction open (every statement's trip says), so the
    pool's rollback of a connection whose session already ended costs no trip: a read
    session took two rollbacks, the session's and the pool's on return. A transaction
    only begins with an explicit ``BEGIN`` here (``isolation_level`` is None), which
    runs through :class:`OneTripCursor`.
    """

    __slots__ = ("_in_transaction",)
    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # a subclass of the stock one

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._in_transaction = True  # unknown until the first trip says

    def _finish(self, commit: bool) -> None:
        connection: Any = self._connection
        if not connection._connection:  # closed: as the stock adapter, nothing to do
            return
        try:
            self._in_transaction = await_(connection._execute(_end, connection._conn, commit))
        except Exception as error:
            self._in_transaction = True
            self._handle_exception(error)

    def rollback(self) -> None:
        if self._in_transaction:
            self._finish(commit=False)

    def commit(self) -> None:
        if self._in_transaction:
            self._finish(commit=True)


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API module SQLAlchemy's aiosqlite dialect is given (``module=``)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as the stock adapter does: never blocks exit
        return OneTripConnection(self, await_(connection))


def dbapi_module() -> ModuleType | None:
    """What to pass as ``module=`` to ``create_async_engine`` for SQLite: the one-trip
    driver on the pinned versions, None (the stock driver) on others."""
    if not supported():
        logger.warning(
            "aiosqlite %s / SQLAlchemy %s are not the versions vbank.sqlite_driver was "
            "written for (%s): using the stock aiosqlite driver",
            aiosqlite.__version__,
            sqlalchemy.__version__,
            PINNED,
        )
        return None
    # duck-typed as a DB-API module, as SQLAlchemy's own adapter is
    return cast(ModuleType, OneTripDBAPI(aiosqlite, sqlite3))
