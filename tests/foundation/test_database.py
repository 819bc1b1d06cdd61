from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from tests.conftest import backend_name
from vbank.db import Database
from vbank.migrate import check_at_head, upgrade


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
