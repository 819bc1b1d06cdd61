"""The append-only, hash-linked audit event log.

Every state change of the service calls :func:`append` with the *same* database session
as the change itself, so the change and its event commit or roll back together.  Each
event's hash covers its canonical encoding and the previous event's hash; editing,
deleting, inserting or reordering stored events breaks the chain at the first bad event,
which :func:`verify_chain` names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

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


@functools.lru_cache(maxsize=65536)
def _json_str(value: str) -> str:
    # types, roles and session references repeat a lot: encode each once
    return json.dumps(value, ensure_ascii=False)


def _json_scalar(value: str | int | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(int(value))
    return _json_str(value)


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
    """The canonical bytes of one event (also the Merkle leaf input in later checkpoints).

    Equal to ``canonical_json`` of the event with its payload object, but built by
    concatenation: the stored payload is already canonical JSON text and is embedded
    byte for byte (so verification does not parse it, and any change to it shows).
    """
    return event_body(seq, ts_us, actor_id, actor_role, session_ref, type, payload)


def event_body(
    seq: int,
    ts_us: int,
    actor_id: int | None,
    actor_role: str | None,
    session_ref: str | None,
    type_: str,
    payload: str,
) -> bytes:
    """:func:`event_bytes` with positional arguments: the verifier calls it once per event,
    so the common values (None, plain str) skip the helper calls."""
    return (
        '{"actor_id":'
        + ("null" if actor_id is None else _json_scalar(actor_id))
        + ',"actor_role":'
        + ("null" if actor_role is None else _json_scalar(actor_role))
        + ',"payload":'
        + payload
        + f',"seq":{int(seq)},"session":'
        + ("null" if session_ref is None else _json_scalar(session_ref))
        + f',"ts_us":{int(ts_us)},"type":'
        + (_json_str(type_) if type(type_) is str else _json_scalar(type_))
        + "}"
    ).encode()


class EventLike(Protocol):
    """An event as stored: an ORM row, a Core row or an exported record."""

    seq: int
    ts_us: int
    actor_id: int | None
    actor_role: str | None
    session_ref: str | None
    type: str
    payload: str
    prev_hash: str
    hash: str


def row_bytes(row: EventLike) -> bytes:
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


@dataclass(frozen=True)
class NewEvent:
    """An event to append: type, payload, who and which session it belongs to."""

    type: str
    payload: Mapping[str, Any]
    actor: Actor = SYSTEM
    session_ref: str | None = None
    ts_us: int | None = None


@dataclass(slots=True)
class LoggedEvent:
    """An event as appended (what :func:`append` returns and listeners receive): the
    stored columns, without an ORM object per event on the hot path."""

    seq: int
    ts_us: int
    actor_id: int | None
    actor_role: str | None
    session_ref: str | None
    type: str
    payload: str
    prev_hash: str
    hash: str = ""


def _chain(seq: int, prev: str, events: Sequence[NewEvent]) -> list[LoggedEvent]:
    """Rows for ``events`` after the head (seq, hash): encoded, size-checked and linked."""
    now = time.time_ns() // 1000
    rows: list[LoggedEvent] = []
    for ev in events:
        body = canonical_json(dict(ev.payload))
        if len(body.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"audit payload of {ev.type} exceeds {MAX_PAYLOAD_BYTES} bytes")
        seq += 1
        row = LoggedEvent(
            seq=seq,
            ts_us=ev.ts_us if ev.ts_us is not None else now,
            actor_id=ev.actor.user_id,
            actor_role=ev.actor.role,
            session_ref=ev.session_ref,
            type=ev.type,
            payload=body,
            prev_hash=prev,
        )
        row.hash = prev = link_hash(prev, row_bytes(row))
        rows.append(row)
    return rows


_HEAD = select(AuditHead).where(AuditHead.id == 1).with_for_update()
_INSERT = insert(cast(Table, AuditEvent.__table__))  # Core: no ORM bookkeeping per event


def _values(rows: Sequence[LoggedEvent]) -> list[dict[str, Any]]:
    return [{c: getattr(r, c) for c in _COLUMNS} for r in rows]


def _head_update(rows: Sequence[LoggedEvent]) -> Any:
    return update(AuditHead).where(AuditHead.id == 1).values(seq=rows[-1].seq, hash=rows[-1].hash)


async def append_many(session: AsyncSession, events: Sequence[NewEvent]) -> list[LoggedEvent]:
    """Append events in order inside the caller's transaction, with one head lock, one
    multi-row insert and one head update however many there are (events that arrive
    together cost one round trip, not one each)."""
    if not events:
        return []
    return await session.run_sync(append_many_sync, events)


def append_many_sync(session: Session, events: Sequence[NewEvent]) -> list[LoggedEvent]:
    """:func:`append_many` on a blocking session (the group-commit writer's thread, and
    async callers through ``run_sync``)."""
    if not events:
        return []
    head = session.execute(_HEAD).scalar_one()
    rows = _chain(head.seq, head.hash, events)
    session.connection().execute(_INSERT, _values(rows))
    session.execute(_head_update(rows))
    head.seq, head.hash = rows[-1].seq, rows[-1].hash
    for row in rows:
        for listener in _listeners.get(row.type, ()):
            listener(session, row)
    return rows


Listener = Callable[[Session, LoggedEvent], None]
_listeners: dict[str, list[Listener]] = {}


def subscribe(types: Iterable[str], listener: Listener) -> None:
    """Call ``listener(session, event)`` for every appended event of these types, inside
    the appending transaction: whatever it writes (a webhook outbox row, a survey) commits
    or rolls back with the event.  Subscribing the same listener twice has no effect.

    A listener is a plain function of a blocking :class:`~sqlalchemy.orm.Session`: every
    append runs on one (async callers through ``run_sync``, the group-commit writer
    directly)."""
    for type_ in types:
        bucket = _listeners.setdefault(type_, [])
        if listener not in bucket:
            bucket.append(listener)


_COLUMNS = (
    "seq",
    "ts_us",
    "actor_id",
    "actor_role",
    "session_ref",
    "type",
    "payload",
    "prev_hash",
    "hash",
)


async def append(
    session: AsyncSession,
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    actor: Actor = SYSTEM,
    session_ref: str | None = None,
    ts_us: int | None = None,
) -> LoggedEvent:
    """Append one event inside the caller's transaction and return it (seq and hash set)."""
    [row] = await append_many(session, [NewEvent(type, payload or {}, actor, session_ref, ts_us)])
    return row


@dataclass(frozen=True)
class ChainReport:
    """Outcome of a chain check: ``first_bad_seq`` names where the chain first breaks."""

    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS_HASH


def verify_chain(rows: Iterable[EventLike], *, head: tuple[int, str] | None = None) -> ChainReport:
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


async def iter_events(session: AsyncSession, batch: int = 5000) -> AsyncIterator[EventLike]:
    """All events in sequence order, streamed in batches (plain rows, not ORM objects:
    verification reads millions of them)."""
    table = AuditEvent.__table__
    last = 0
    while True:
        rows: Sequence[Any] = (
            await session.execute(
                select(table).where(table.c.seq > last).order_by(table.c.seq).limit(batch)
            )
        ).all()
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
