from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlalchemy import select, text, update

from audit.log import GENESIS_HASH, Actor, append, iter_events, verify_chain, verify_database
from audit.models import AuditEvent
from vbank.db import Database


async def _fill(db: Database, n: int) -> None:
    async with db.transaction() as session:
        for i in range(n):
            await append(
                session,
                "test.event",
                {"i": i, "name": "李雷"},
                actor=Actor(1, "agent"),
                session_ref=f"s{i % 3}",
            )


async def _rows(db: Database) -> list[AuditEvent]:
    async with db.sessions() as session:
        return [r async for r in iter_events(session, batch=7)]


async def test_chain_verifies_and_links(db: Database) -> None:
    await _fill(db, 20)
    rows = await _rows(db)
    assert [r.seq for r in rows] == list(range(1, 21))
    assert rows[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    async with db.sessions() as session:
        report = await verify_database(session)
    assert report.ok and report.events == 20


async def test_event_rolls_back_with_its_change(db: Database) -> None:
    await _fill(db, 2)
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await append(session, "doomed", {})
            raise RuntimeError("the state change failed")
    await _fill(db, 1)
    rows = await _rows(db)
    assert [r.type for r in rows] == ["test.event"] * 3
    async with db.sessions() as session:
        assert (await verify_database(session)).ok


@pytest.mark.parametrize("target", [1, 5, 10])
async def test_edited_payload_is_detected_at_that_event(db: Database, target: int) -> None:
    await _fill(db, 10)
    async with db.transaction() as session:
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.seq == target)
            .values(payload='{"i":999,"name":"李雷"}')
        )
    async with db.sessions() as session:
        report = await verify_database(session)
    assert not report.ok
    assert report.first_bad_seq == target
    assert "hash" in report.reason


async def test_deleted_event_is_detected(db: Database) -> None:
    await _fill(db, 10)
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM audit_events WHERE seq = 4"))
    async with db.sessions() as session:
        report = await verify_database(session)
    assert not report.ok and report.first_bad_seq == 4


async def test_truncated_tail_is_detected_by_the_head(db: Database) -> None:
    await _fill(db, 10)
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM audit_events WHERE seq > 8"))
    async with db.sessions() as session:
        report = await verify_database(session)
    assert not report.ok and report.first_bad_seq == 9


def test_reordered_events_are_detected() -> None:
    rows = [
        AuditEvent(
            seq=i,
            ts_us=i,
            actor_id=None,
            actor_role=None,
            session_ref=None,
            type="t",
            payload="{}",
            prev_hash="",
            hash="",
            format=1,
        )
        for i in (1, 2, 3)
    ]
    from audit.log import link_hash, row_bytes

    prev = GENESIS_HASH
    for r in rows:
        r.prev_hash = prev
        r.hash = link_hash(prev, row_bytes(r))
        prev = r.hash
    assert verify_chain(rows).ok
    swapped = [rows[0], rows[2], rows[1]]
    report = verify_chain(swapped)
    assert not report.ok and report.first_bad_seq == 2


async def test_concurrent_appenders_keep_one_chain(db: Database) -> None:
    async def writer(k: int) -> None:
        for i in range(10):
            async with db.transaction() as session:
                await append(session, "concurrent", {"writer": k, "i": i})

    await asyncio.gather(*(writer(k) for k in range(8)))
    async with db.sessions() as session:
        report = await verify_database(session)
        count = len((await session.execute(select(AuditEvent.seq))).all())
    assert report.ok, report
    assert count == 80


async def test_oversized_payload_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        async with db.transaction() as session:
            await append(session, "big", {"x": "a" * 70_000})
