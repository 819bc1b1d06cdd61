"""Helpers for the tamper-evidence tests: signing keys, filling the log, in-memory logs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.checkpoints import signed_at_line, to_us
from audit.keys import KeyRegistry, SigningKey, load_signing_key
from audit.log import (
    FORMAT_CHAINED,
    FORMAT_LEAF,
    GENESIS_HASH,
    Actor,
    NewEvent,
    append_many,
    canonical_json,
    event_body,
    link_hash,
    row_bytes,
    row_hash,
)
from audit.merkle import MerkleTree, leaf_hash
from audit.models import AuditEvent, AuditHead
from audit.verifier import CheckpointClaim, ExportedEvent
from vbank.db import Database

ORIGIN = "vbank.test/audit"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 7, 1, tzinfo=UTC)  # the new key starts signing
T2 = datetime(2025, 8, 1, tzinfo=UTC)  # the old key stops
KEY_A = load_signing_key("vbank-audit", bytes(range(32)), not_before=T0, not_after=T2)
KEY_B = load_signing_key("vbank-audit", bytes(range(32, 64)), not_before=T1)
OTHER = load_signing_key("vbank-audit", bytes(range(64, 96)))


@pytest.fixture
def keys() -> KeyRegistry:
    """A key valid from 2025 on, with no end (the usual single-key setup)."""
    return KeyRegistry([load_signing_key("vbank-audit", bytes(range(100, 132)))])


async def fill(
    db: Database, n: int, *, contact: str | None = None, start: int = 0, chained: bool = False
) -> None:
    """Append ``n`` events in one transaction; events alternate between two contacts
    unless ``contact`` is given. ``chained``: as the appender before format 2 did."""
    events = [
        NewEvent(
            "test.event",
            {"i": start + i, "name": "李雷"},
            Actor(1, "agent"),
            contact or f"c{(start + i) % 2}",
        )
        for i in range(n)
    ]
    async with db.transaction() as session:
        await (append_chained(session, events) if chained else append_many(session, events))


async def append_chained(session: AsyncSession, events: Sequence[NewEvent]) -> None:
    """Append format-1 events the way the appender did before format 2 existed: the
    hash chained over the previous hash, rows inserted without a ``format`` value (the
    column's server default marks them), so a log can hold old events before new ones."""
    if not events:
        return
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    seq, prev = head.seq, head.hash
    now = time.time_ns() // 1000
    rows: list[dict[str, Any]] = []
    for ev in events:
        seq += 1
        row: dict[str, Any] = {
            "seq": seq,
            "ts_us": ev.ts_us or now,
            "actor_id": ev.actor.user_id,
            "actor_role": ev.actor.role,
            "session_ref": ev.session_ref,
            "type": ev.type,
            "payload": canonical_json(dict(ev.payload)),
            "prev_hash": prev,
        }
        body = event_body(
            FORMAT_CHAINED,
            seq,
            row["ts_us"],
            ev.actor.user_id,
            ev.actor.role,
            ev.session_ref,
            ev.type,
            row["payload"],
            prev,
        )
        row["hash"] = prev = link_hash(prev, body)
        rows.append(row)
    await session.execute(insert(AuditEvent), rows)
    await session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq, hash=prev))


def make_events(
    n: int, *, start_ts: int = 1_700_000_000_000_000, chained: int = 0
) -> list[ExportedEvent]:
    """A valid in-memory log of ``n`` events (as the database would store them): the
    first ``chained`` in format 1, the rest in format 2."""
    out: list[ExportedEvent] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        ev = ExportedEvent(
            seq=i,
            ts_us=start_ts + i,
            actor_id=i % 3 or None,
            actor_role="agent" if i % 3 else None,
            session_ref=f"c{i % 2}",
            type="test.event",
            payload=canonical_json({"i": i, "note": "ü€"}),
            prev_hash=prev,
            hash="",
            format=FORMAT_CHAINED if i <= chained else FORMAT_LEAF,
        )
        ev.hash = prev = row_hash(ev)
        out.append(ev)
    return out


def sign_sizes(
    events: Sequence[ExportedEvent],
    sizes: Sequence[int],
    signer: SigningKey,
    at: datetime,
) -> list[CheckpointClaim]:
    """Signed checkpoints of the given prefixes of ``events``, all signed at ``at``."""
    tree = MerkleTree(leaf_hash(row_bytes(e)) for e in events)
    claims = []
    for size in sizes:
        body = Checkpoint(ORIGIN, size, tree.root(size), (signed_at_line(to_us(at)),))
        note = sign_checkpoint(body, KeyRegistry([signer]), at=at)
        claims.append(CheckpointClaim(size, note, to_us(at), "export"))
    return claims
