from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from tests.conftest import backend_name
from vbank.db import Database
from vbank.migrate import check_at_head, upgrade
from vbank.schema import metadata


async def test_schema_comes_from_migrations(db: Database, database_url: str) -> None:
    assert check_at_head(database_url) is None
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {
        "users",
        "agent_profiles",
        "auth_sessions",
        "audit_events",
        "audit_head",
        "bank_accounts",
        "reference_photos",
        "alembic_version",
    } <= tables


async def test_models_match_the_migrations(db: Database) -> None:
    """A model changed without a migration (or the reverse) shows up here, not in
    production: Alembic's autogenerate finds no difference between the two."""

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


def test_empty_database_is_not_at_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    assert "code expects" in (check_at_head(url) or "")
    upgrade(url)
    assert check_at_head(url) is None


@pytest.mark.skipif(backend_name() != "sqlite", reason="SQLite pragmas; this run is on PostgreSQL")
async def test_sqlite_runs_in_wal_with_foreign_keys(db: Database) -> None:
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1


async def test_foreign_keys_and_checks_are_enforced(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    from vbank.models import BankAccount

    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            session.add(
                BankAccount(owner_id=999, number="X1", name="n", currency="CNY", balance_minor=1)
            )
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO users (username, display_name, role, password_hash,"
                    " disabled, created_at)"
                    " VALUES ('x', 'x', 'root', 'h', false, CURRENT_TIMESTAMP)"
                )
            )


async def test_reads_do_not_hold_up_writers(db: Database) -> None:
    """A read session open across event-loop turns (the checkpointer catching up) must
    not take the write lock; on SQLite it cannot write either."""
    import asyncio

    from sqlalchemy.exc import OperationalError

    async with db.reads() as reader:
        before = (await reader.execute(text("SELECT count(*) FROM users"))).scalar_one()

        async def write() -> None:
            async with db.transaction() as session:
                await session.execute(
                    text(
                        "INSERT INTO users (username, display_name, role, password_hash,"
                        " disabled, created_at) VALUES ('r1', 'R', 'customer', 'x', false,"
                        " CURRENT_TIMESTAMP)"
                    )
                )

        await asyncio.wait_for(write(), 5)  # would wait for the busy timeout if locked
        if backend_name() == "sqlite":
            # the reader's snapshot predates the write; the write is committed for others
            again = (await reader.execute(text("SELECT count(*) FROM users"))).scalar_one()
            assert again == before
            with pytest.raises(OperationalError, match=r"readonly|read-only|query_only"):
                await reader.execute(text("DELETE FROM users"))
    async with db.reads() as fresh:
        after = (await fresh.execute(text("SELECT count(*) FROM users"))).scalar_one()
    assert after == before + 1


def test_checkpoint_wal_copies_the_log_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A writer with autocheckpoint off leaves its frames in the WAL until checkpoint_wal
    (the writer process's thread) copies them back."""
    import sqlite3

    from vbank.db import checkpoint_wal

    path = str(tmp_path / "wal.sqlite3")
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (x TEXT)")
    writer.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(2000)])
    writer.commit()
    wal = tmp_path / "wal.sqlite3-wal"
    assert wal.stat().st_size > 500_000
    before = (tmp_path / "wal.sqlite3").stat().st_size
    checkpoint_wal(path)
    assert (tmp_path / "wal.sqlite3").stat().st_size > before + 500_000  # pages copied back
    probe = sqlite3.connect(path)
    assert probe.execute("SELECT count(*) FROM t").fetchone() == (2000,)
    probe.close()
    writer.close()
