"""The one-trip SQLite driver (vbank/sqlite_driver.py): a statement is one call in
aiosqlite's thread, a session's end is one more, and results, row counts, errors and
streams are what SQLAlchemy's stock driver gives.

These tests use a SQLite file of their own on every run (the driver is SQLite's only),
and fail if the installed aiosqlite or SQLAlchemy moves past the versions the driver
reaches into.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from vbank import sqlite_driver
from vbank.db import Database
from vbank.migrate import upgrade
from vbank.models import User
from vbank.roles import Role


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path / 'driver.sqlite3'}"
    upgrade(url)
    db = Database(url)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function run in an aiosqlite thread, from now on."""
    names: list[str] = []
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        names.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    return names


def _user(name: str) -> User:
    return User(
        username=name,
        display_name=name,
        role=Role.CUSTOMER,
        password_hash="x",
        created_at=datetime.now(UTC),
    )


def test_the_installed_libraries_are_the_pinned_ones() -> None:
    """The driver reaches into these versions' internals: a new one must be checked."""
    assert sqlite_driver.supported()
    assert not sqlite_driver.supported("0.23.0", "2.1.9")
    assert not sqlite_driver.supported("0.22.1", "2.2.0")


def test_other_versions_fall_back_to_the_stock_driver(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_driver, "supported", lambda: False)
    with caplog.at_level(logging.WARNING, logger="vbank.sqlite_driver"):
        assert sqlite_driver.dbapi_module() is None
    assert "stock aiosqlite driver" in caplog.text


async def test_a_read_session_is_three_trips(sqlite_db: Database, trips: list[str]) -> None:
    """BEGIN, the statement, the rollback: one call each (the stock driver made nine)."""
    async with sqlite_db.reads() as session:  # warm: the pool has opened its connection
        await session.execute(select(func.count()).select_from(User))
    trips.clear()
    async with sqlite_db.reads() as session:
        await session.execute(select(User.id).where(User.id == 1))
    assert trips == ["_run", "_run", "_end"]


async def test_a_write_transaction_is_not_rolled_back_again(
    sqlite_db: Database, trips: list[str]
) -> None:
    """After a commit the pool's reset on return costs no trip."""
    async with sqlite_db.transaction() as session:
        session.add(_user("warm"))
    trips.clear()
    async with sqlite_db.transaction() as session:
        session.add(_user("trip"))
    assert trips == ["_run", "_run", "_end"]  # BEGIN IMMEDIATE, INSERT, COMMIT
    async with sqlite_db.reads() as session:
        names = (await session.execute(select(User.username))).scalars().all()
    assert set(names) == {"warm", "trip"}


async def test_results_row_counts_and_inserted_ids(sqlite_db: Database) -> None:
    async with sqlite_db.transaction() as session:
        first, second = _user("a"), _user("b")
        session.add_all([first, second])
        await session.flush()
        assert first.id is not None and second.id is not None and first.id != second.id
        result = await session.execute(
            update(User).where(User.username.in_(["a", "b"])).values(display_name="renamed")
        )
        assert result.rowcount == 2  # type: ignore[attr-defined]
    async with sqlite_db.reads() as session:
        rows = (
            await session.execute(select(User.username, User.display_name).order_by(User.id))
        ).all()
        assert [tuple(r) for r in rows] == [("a", "renamed"), ("b", "renamed")]
        assert (await session.execute(text("SELECT 1 WHERE 0"))).first() is None


async def test_a_failed_statement_rolls_back_and_the_connection_goes_on(
    sqlite_db: Database, trips: list[str]
) -> None:
    async with sqlite_db.transaction() as session:
        session.add(_user("taken"))
    with pytest.raises(IntegrityError):
        async with sqlite_db.transaction() as session:
            session.add(_user("kept-out"))
            await session.flush()
            session.add(_user("taken"))  # unique username
            await session.flush()
    assert trips[-1] == "_end"  # the open transaction was rolled back
    async with sqlite_db.transaction() as session:
        session.add(_user("after"))
    async with sqlite_db.reads() as session:
        names = set((await session.execute(select(User.username))).scalars())
    assert names == {"taken", "after"}


async def test_streamed_results_still_work(sqlite_db: Database) -> None:
    async with sqlite_db.transaction() as session:
        session.add_all([_user(f"s{i}") for i in range(30)])
    async with sqlite_db.reads() as session:
        stream = await session.stream(select(User.username).order_by(User.username))
        names = [name async for name in stream.scalars()]
    assert names == sorted(f"s{i}" for i in range(30))
