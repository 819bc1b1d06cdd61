"""Core statements on the driver's cursor (vbank.dbapi): the same rows and types as
SQLAlchemy's execution, on the blocking driver and on the async driver under run_sync,
the driver's errors as SQLAlchemy's, and what it cannot run refused up front."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy import Connection, Engine, Table, bindparam, create_engine, insert, select
from sqlalchemy.exc import IntegrityError

from tests.trading.test_service import open_contact
from vbank import dbapi
from vbank.contact.models import ChatMessage, Contact
from vbank.db import Database, configure_sqlite, sync_url
from vbank.roles import Role

MESSAGES = cast(Table, ChatMessage.__table__)
CONTACTS = cast(Table, Contact.__table__)
WHEN = datetime(2026, 3, 10, 9, 0, 1, 250_000, tzinfo=UTC)
BY_CONTACT = select(MESSAGES.c.seq, MESSAGES.c.text, MESSAGES.c.created_at).where(
    MESSAGES.c.contact_id == bindparam("cid")
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(sync_url(database_url))
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def contact(db: Database, make_user: Any) -> tuple[str, int]:
    customer = await make_user("dbapi-customer", Role.CUSTOMER)
    agent = await make_user("dbapi-agent", Role.AGENT)
    return await open_contact(db, customer, agent, None), customer


def _line(cid: str, sender: int, seq: int) -> dict[str, object]:
    return {
        "contact_id": cid,
        "seq": seq,
        "sender_id": sender,
        "sender_role": "customer",
        "client_id": f"k{seq}",
        "text": f"line {seq}",
        "created_at": WHEN,
    }


def _store_and_read(conn: Connection, cid: str, sender: int) -> list[tuple[Any, ...]]:
    dbapi.executemany(conn, insert(MESSAGES), [_line(cid, sender, s) for s in (1, 2, 3)])
    return dbapi.execute(conn, BY_CONTACT.order_by(MESSAGES.c.seq), {"cid": cid})


def test_rows_and_types_match_sqlalchemys(engine: Engine, contact: tuple[str, int]) -> None:
    cid, sender = contact
    with engine.begin() as conn:
        ours = _store_and_read(conn, cid, sender)
        theirs = [tuple(r) for r in conn.execute(BY_CONTACT.order_by(MESSAGES.c.seq), {"cid": cid})]
        # the statement's own values (here the literal limit) travel with it
        newest = dbapi.execute(
            conn, BY_CONTACT.order_by(MESSAGES.c.seq.desc()).limit(1), {"cid": cid}
        )
    assert ours == theirs
    assert [(seq, text) for seq, text, _ in ours] == [(1, "line 1"), (2, "line 2"), (3, "line 3")]
    # SQLite keeps datetimes as text: they went in and came out through the type's processors
    assert all(isinstance(at, datetime) for _, _, at in ours)
    assert ours[0][2].replace(tzinfo=UTC) == WHEN
    assert [row[0] for row in newest] == [3]


async def test_runs_on_the_async_driver_under_run_sync(
    db: Database, contact: tuple[str, int]
) -> None:
    cid, sender = contact
    async with db.transaction() as session:
        rows = await session.run_sync(lambda s: _store_and_read(s.connection(), cid, sender))
    assert [seq for seq, _, _ in rows] == [1, 2, 3]
    assert all(isinstance(at, datetime) for _, _, at in rows)


def test_driver_errors_are_sqlalchemys(engine: Engine, contact: tuple[str, int]) -> None:
    cid, sender = contact
    with engine.begin() as conn:
        dbapi.executemany(conn, insert(MESSAGES), [_line(cid, sender, 1)])
    with engine.begin() as conn, pytest.raises(IntegrityError) as caught:
        dbapi.executemany(conn, insert(MESSAGES), [_line(cid, sender, 1)])  # same seq
    assert isinstance(caught.value.orig, engine.dialect.loaded_dbapi.Error)


def test_statements_it_cannot_run_are_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="expanding"):
            dbapi.execute(
                conn,
                select(CONTACTS.c.id).where(CONTACTS.c.id.in_(bindparam("ids", expanding=True))),
                {"ids": ["x"]},
            )
        with pytest.raises(ValueError, match="defaults"):  # Contact.priority has one
            dbapi.executemany(
                conn,
                insert(CONTACTS),
                [
                    {
                        "id": "c",
                        "customer_id": 1,
                        "skill": "accounts",
                        "state": "queued",
                        "created_at": WHEN,
                        "queued_at": WHEN,
                    }
                ],
            )
