"""Audit listeners run inside the appending transaction: their writes share its fate."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audit import log
from audit.models import AuditEvent
from vbank.db import Database


async def test_listener_writes_commit_and_roll_back_with_the_event(db: Database) -> None:
    seen: list[tuple[int, str]] = []

    def on_event(session: Session, event: log.LoggedEvent) -> None:
        seen.append((event.seq, event.type))
        log.append_many_sync(session, [log.NewEvent("listener.echo", {"of": event.seq})])

    log.subscribe(["test.listened"], on_event)
    log.subscribe(["test.listened"], on_event)  # idempotent
    try:
        async with db.transaction() as session:
            await log.append(session, "test.other", {})
            first = await log.append(session, "test.listened", {"n": 1})
        with pytest.raises(RuntimeError):
            async with db.transaction() as session:
                await log.append(session, "test.listened", {"n": 2})
                raise RuntimeError("roll back")
    finally:
        log._listeners.pop("test.listened", None)

    assert [t for _, t in seen] == ["test.listened", "test.listened"]  # once each, not twice
    async with db.sessions() as session:
        echoes = (
            await session.scalars(
                select(AuditEvent.payload).where(AuditEvent.type == "listener.echo")
            )
        ).all()
        total = await session.scalar(select(func.count()).select_from(AuditEvent))
        report = await log.verify_database(session)
    assert echoes == [f'{{"of":{first.seq}}}']  # the rolled-back event's echo is gone too
    assert report.ok and total == report.events
