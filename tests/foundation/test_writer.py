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


class Renamer:
    """A bulk handler: renames several users with one statement; refuses names with '!'
    (returned, nothing written) and raises on 'boom' (the batch falls back to one by one)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, session: Session, items: list[tuple[int, str]]) -> list[object]:
        self.calls.append(len(items))
        if any(name == "boom" for _, name in items):
            for uid, name in items:  # half-written work the fallback must undo
                session.get(User, uid).display_name = name  # type: ignore[union-attr]
            session.flush()
            raise RuntimeError("boom")
        out: list[object] = []
        for uid, name in items:
            if "!" in name:
                out.append(ValueError(f"bad name {name}"))
                continue
            user = session.get(User, uid)
            assert user is not None
            user.display_name = name
            defer_audit(session, log.NewEvent("test.bulk", {"user": uid}))
            out.append(name.upper())
        session.flush()
        return out


async def test_bulk_items_share_one_call_and_fail_alone(db: Database, make_user) -> None:  # type: ignore[no-untyped-def]
    from vbank.roles import Role

    ids = [await make_user(f"bulk{i}", Role.CUSTOMER) for i in range(30)]
    renamer = Renamer()
    names = [("boom" if i == 17 else f"b{i}!" if i % 5 == 0 else f"b{i}") for i in range(30)]
    results = await asyncio.gather(
        *(db.writer.run_bulk(renamer, (uid, n)) for uid, n in zip(ids, names, strict=True)),
        return_exceptions=True,
    )
    for i, result in enumerate(results):
        if i == 17:
            assert isinstance(result, RuntimeError)
        elif i % 5 == 0:
            assert isinstance(result, ValueError)
        else:
            assert result == f"B{i}"
    assert len(renamer.calls) < 30 + 30  # grouped at first, then one by one after "boom"
    assert max(renamer.calls) > 1
    async with db.sessions() as session:
        stored = dict((await session.execute(select(User.id, User.display_name))).all())
        bulk_events = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.type == "test.bulk")
        )
        assert (await log.verify_database(session)).ok
    for i, uid in enumerate(ids):
        assert (stored[uid] == names[i]) is (i != 17 and i % 5 != 0)
    assert bulk_events == sum(1 for i in range(30) if i != 17 and i % 5 != 0)
