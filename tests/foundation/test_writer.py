"""The group-commit writer: units that arrive together share a transaction, a failing unit
is rolled back alone (its deferred audit events too), and audit listeners see the events."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audit import log
from audit.models import AuditEvent
from vbank.db import Database
from vbank.models import User
from vbank.writer import defer_audit


def _rename(user_id: int, name: str, fail: bool = False):  # type: ignore[no-untyped-def]
    def unit(session: Session) -> str:
        user = session.get(User, user_id)
        assert user is not None
        user.display_name = name
        session.flush()
        defer_audit(session, log.NewEvent("test.renamed", {"user": user_id, "name": name}))
        if fail:
            raise ValueError(f"unit {name} refuses")
        return name

    return unit


async def test_units_batch_and_fail_alone(db: Database, make_user) -> None:  # type: ignore[no-untyped-def]
    from vbank.roles import Role

    ids = [await make_user(f"writer{i}", Role.CUSTOMER) for i in range(40)]
    results = await asyncio.gather(
        *(db.writer.run(_rename(uid, f"n{i}", fail=i % 7 == 3)) for i, uid in enumerate(ids)),
        return_exceptions=True,
    )
    failed = {i for i, r in enumerate(results) if isinstance(r, ValueError)}
    assert failed == {i for i in range(40) if i % 7 == 3}
    assert all(results[i] == f"n{i}" for i in range(40) if i not in failed)
    assert db.writer.batches < 40  # concurrent units shared transactions

    async with db.sessions() as session:
        names = dict((await session.execute(select(User.id, User.display_name))).all())
        renamed = (
            await session.scalars(
                select(AuditEvent.payload)
                .where(AuditEvent.type == "test.renamed")
                .order_by(AuditEvent.seq)
            )
        ).all()
        report = await log.verify_database(session)
    for i, uid in enumerate(ids):
        assert (names[uid] == f"n{i}") is (i not in failed)
    assert len(renamed) == 40 - len(failed)  # a failed unit's deferred events are gone
    assert all(f'"name":"n{i}"' not in "".join(renamed) for i in failed)
    assert report.ok


async def test_sync_listeners_run_in_the_writer_transaction(db: Database, make_user) -> None:  # type: ignore[no-untyped-def]
    from vbank.roles import Role

    uid = await make_user("writer-l", Role.CUSTOMER)

    def echo(session: Session, event: log.LoggedEvent) -> None:
        log.append_many_sync(session, [log.NewEvent("test.echo", {"of": event.seq})])

    log.subscribe(["test.renamed"], echo)
    try:
        assert await db.writer.run(_rename(uid, "ok")) == "ok"
        with pytest.raises(ValueError):
            await db.writer.run(_rename(uid, "bad", fail=True))
        async with db.transaction() as session:  # async appends reach sync listeners too
            await log.append(session, "test.renamed", {"user": uid, "name": "async"})
    finally:
        log._listeners.pop("test.renamed", None)
    async with db.sessions() as session:
        echoes = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.type == "test.echo")
        )
        assert (await log.verify_database(session)).ok
    assert echoes == 2
