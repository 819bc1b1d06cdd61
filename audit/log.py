"""The append-only, hash-linked audit event log.

Every state change of the service calls :func:`append` with the *same* database session
as the change itself, so the change and its event commit or roll back together.  Each
event's hash covers its canonical encoding and the previous event's hash; editing,
deleting, inserting or reordering stored events breaks the chain at the first bad event,
which :func:`verify_chain` names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.models import AuditEvent, AuditHead

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
MAX_PAYLOAD_BYTES = 64 * 1024


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Actor:
    """Who caused an event: a user id and role, or the system itself (both None)."""

    user_id: int | None = None
    role: str | None = None


SYSTEM = Actor()


def event_bytes(
    *,
    seq: int,
    ts_us: int,
    actor_id: int | None,
    actor_role: str | None,
    session_ref: str | None,
    type: str,
    payload: str,
) -> bytes:
    """The canonical bytes of one event (also the Merkle leaf input in later checkpoints)."""
    return canonical_json(
        {
            "seq": seq,
            "ts_us": ts_us,
            "actor_id": actor_id,
            "actor_role": actor_role,
            "session": session_ref,
            "type": type,
            "payload": json.loads(payload),
        }
    ).encode()


def row_bytes(row: AuditEvent) -> bytes:
    return event_bytes(
        seq=row.seq,
        ts_us=row.ts_us,
        actor_id=row.actor_id,
        actor_role=row.actor_role,
        session_ref=row.session_ref,
        type=row.type,
        payload=row.payload,
    )


def link_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


async def append(
    session: AsyncSession,
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    actor: Actor = SYSTEM,
    session_ref: str | None = None,
    ts_us: int | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction and return it (seq and hash set)."""
    body = canonical_json(dict(payload or {}))
    if len(body.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"audit payload of {type} exceeds {MAX_PAYLOAD_BYTES} bytes")
    head = (
        await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    ).scalar_one()
    seq = head.seq + 1
    ts = ts_us if ts_us is not None else time.time_ns() // 1000
    row = AuditEvent(
        seq=seq,
        ts_us=ts,
        actor_id=actor.user_id,
        actor_role=actor.role,
        session_ref=session_ref,
        type=type,
        payload=body,
        prev_hash=head.hash,
    )
    row.hash = link_hash(head.hash, row_bytes(row))
    session.add(row)
    head.seq = seq
    head.hash = row.hash
    await session.flush()
    return row


@dataclass(frozen=True)
class ChainReport:
    """Outcome of a chain check: ``first_bad_seq`` names where the chain first breaks."""

    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS_HASH


def verify_chain(rows: Iterable[AuditEvent], *, head: tuple[int, str] | None = None) -> ChainReport:
    """Check sequence numbers, links and hashes in order; stop at the first bad event.

    ``head`` (seq, hash) from the chain-head row or a checkpoint catches truncation of
    the newest events, which a chain alone cannot see.
    """
    prev_hash = GENESIS_HASH
    expected_seq = 1
    count = 0
    for row in rows:
        if row.seq != expected_seq:
            bad = min(row.seq, expected_seq)
            return ChainReport(False, count, bad, f"expected event {expected_seq}, found {row.seq}")
        if row.prev_hash != prev_hash:
            return ChainReport(False, count, row.seq, "link to the previous event is broken")
        try:
            computed = link_hash(prev_hash, row_bytes(row))
        except (ValueError, TypeError):
            return ChainReport(False, count, row.seq, "event payload is not valid JSON")
        if computed != row.hash:
            return ChainReport(False, count, row.seq, "event content does not match its hash")
        prev_hash = row.hash
        expected_seq += 1
        count += 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq != count:
            return ChainReport(
                False, count, count + 1, f"log ends at event {count}, head says {head_seq}"
            )
        if head_hash != prev_hash:
            return ChainReport(False, count, count, "last event does not match the head hash")
    return ChainReport(True, count, head_hash=prev_hash)


async def iter_events(session: AsyncSession, batch: int = 5000) -> AsyncIterator[AuditEvent]:
    """All events in sequence order, streamed in batches."""
    last = 0
    while True:
        rows = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.seq > last)
                    .order_by(AuditEvent.seq)
                    .limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1].seq


async def verify_database(session: AsyncSession) -> ChainReport:
    """Verify the whole stored chain against the chain-head row."""
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one_or_none()
    rows = [row async for row in iter_events(session)]
    return verify_chain(rows, head=(head.seq, head.hash) if head else (0, GENESIS_HASH))
