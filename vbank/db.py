"""Database engine and sessions: SQLite by default (WAL, foreign keys), PostgreSQL by URL.

Settings hold one URL in its synchronous form (``sqlite:///…`` or
``postgresql+psycopg://…``); the service uses the asyncio driver derived from it and
Alembic the synchronous one.  On SQLite every transaction starts with
``BEGIN IMMEDIATE`` through a single pooled connection, so writers never deadlock on a
lock upgrade; PostgreSQL uses an ordinary pool.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from vbank.sqlite_driver import dbapi_module

if TYPE_CHECKING:
    from vbank.writer import GroupWriter
    from vbank.writer_process import ProcessWriter

logger = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base shared by every table (domain and audit)."""

    metadata = MetaData(naming_convention=NAMING)


def sync_url(url: str) -> URL:
    """The URL Alembic and command-line tools use (blocking drivers)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return u.set(drivername="sqlite")
    if u.get_backend_name() == "postgresql":
        return u.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database backend {u.get_backend_name()!r}")


def async_url(url: str) -> URL:
    """The URL the running service uses (asyncio drivers)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return u.set(drivername="sqlite+aiosqlite")
    if u.get_backend_name() == "postgresql":
        return u.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database backend {u.get_backend_name()!r}")


def utc(ts: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones; everything
    we store is UTC)."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def utc_or_none(ts: datetime | None) -> datetime | None:
    return None if ts is None else utc(ts)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


#: a writer's connection: WAL, foreign keys, and the WAL copied back every 10,000 pages
#: (40 MB), not 1,000: chat batches dirty a few hundred index pages each, and
#: checkpointing every few commits made a 240-line batch 30-40 % slower (measured on a
#: 60,000-line table)
_WRITER_PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL")
WAL_AUTOCHECKPOINT = 10_000
#: a reader's connection: it cannot write
_READER_PRAGMAS = ("query_only=ON",)


def configure_sqlite(
    sync_engine: Any, *, read_only: bool = False, autocheckpoint: int = WAL_AUTOCHECKPOINT
) -> None:
    """Pragmas, a busy timeout and how transactions begin: BEGIN IMMEDIATE for writers
    (no lock upgrade can deadlock), a deferred BEGIN for ``read_only`` connections (a WAL
    snapshot that takes no lock, so readers never hold up the writers).  A writer with
    ``autocheckpoint=0`` never copies the WAL back in its commits: something else must
    (:func:`checkpoint_wal`)."""
    pragmas = (
        _READER_PRAGMAS
        if read_only
        else (*_WRITER_PRAGMAS, f"wal_autocheckpoint={int(autocheckpoint)}")
    )
    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=10000")
        for pragma in pragmas:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def checkpoint_wal(path: str) -> None:
    """Copy what it can of the WAL back into the database file without waiting for or
    blocking anyone (a PASSIVE checkpoint, on a connection of its own)."""
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()


class Database:
    """Owns the async engine; hands out sessions and transactions."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            # One connection: SQLite has one writer anyway, and this keeps the
            # write lock from ever being contended inside the process.
            kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
            module = dbapi_module()  # one trip to aiosqlite's thread per statement
            if module is not None:
                kwargs["module"] = module
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        if self.is_sqlite:
            configure_sqlite(self.engine.sync_engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine: AsyncEngine | None = None
        #: sessions for reads only; on SQLite a second connection whose transactions take
        #: no lock (every transaction of ``sessions`` starts with BEGIN IMMEDIATE, which
        #: holds the write lock for as long as the loop takes to read the rows)
        self.reads = self.sessions
        if self.is_sqlite and make_url(url).database not in (None, "", ":memory:"):
            self._read_engine = create_async_engine(
                async_url(url), **{**kwargs, "pool_size": 1, "max_overflow": 0}
            )
            configure_sqlite(self._read_engine.sync_engine, read_only=True)
            self.reads = async_sessionmaker(self._read_engine, expire_on_commit=False)
        self._writer: GroupWriter | None = None
        self._process_writer: ProcessWriter | None = None

    @property
    def writer(self) -> GroupWriter:
        """The group-commit writer (a blocking connection in its own thread), on first use."""
        if self._writer is None:
            from vbank.writer import GroupWriter

            self._writer = GroupWriter(sync_url(self.url), sqlite=self.is_sqlite)
        return self._writer

    @property
    def process_writer(self) -> ProcessWriter:
        """The group-commit writer in a child process (started on its first batch)."""
        if self._process_writer is None:
            from vbank.writer_process import ProcessWriter

            self._process_writer = ProcessWriter(sync_url(self.url), sqlite=self.is_sqlite)
        return self._process_writer

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._process_writer is not None:
            await self._process_writer.close()
            self._process_writer = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._read_engine is not None:
            await self._read_engine.dispose()
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Command-line tools open a database for one job: closed whatever happens."""
        await self.close()
