"""Signed checkpoints of the stored audit log, made in the background and sent to witnesses.

Why: the hash chain shows an edit only to someone who trusts the newest hash; a signed
checkpoint (C2SP tlog-checkpoint: origin, size, RFC 6962 Merkle root, Ed25519 signatures)
pins the whole prefix of the log, and a copy published outside the database (a witness
file or URL) still holds when the database, chain and checkpoint table are rewritten.

The Merkle leaf of event ``seq`` is ``SHA-256(0x00 ‖ event_bytes)`` at index ``seq - 1``
(for a format-2 event, its stored hash: see ``audit.log``).
:class:`Checkpointer` signs when ``every_events`` new events exist or ``interval_s`` has
passed since the last checkpoint with new events waiting, and once more at shutdown.
Each stored row keeps its signing time (``signed_at_us``): the C2SP format has no time, and
key windows are checked at it. The time is also an extension line of the signed body
(``signed-at <ISO 8601>``), so an edited time shows; other verifiers ignore the line.

Witness records are JSON objects ``{"origin", "size", "root", "signed_at",
"signed_at_us", "note"}``: one line each appended to the witness file, or one POST
(``application/json``) per checkpoint to the witness URL. Only ``note`` and
``signed_at_us`` are trusted by :mod:`audit.verifier`; the rest is for people.

Entry points: ``create_checkpoint(db, keys, origin=...) -> AuditCheckpoint | None``,
``Checkpointer(db, keys, origin=..., every_events=..., interval_s=..., witness=...)``
with ``start()``, ``stop()`` and ``checkpoint_now()``, ``Checkpointer.from_settings(db,
settings)``, ``load_checkpoints(session)`` and ``read_witness_file(path)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from audit.checkpoint import Checkpoint, CheckpointError, sign_checkpoint
from audit.keys import KeyRegistry
from audit.log import GENESIS_HASH, event_bytes, hash_and_leaf
from audit.merkle import HASH_SIZE, CompactRange
from audit.models import AuditCheckpoint, AuditEvent, AuditHead
from vbank.db import Database

if TYPE_CHECKING:
    from vbank.config import Settings

__all__ = [
    "CheckpointRefused",
    "Checkpointer",
    "Witness",
    "WitnessRecord",
    "create_checkpoint",
    "from_us",
    "load_checkpoints",
    "read_witness_file",
    "signed_at_line",
    "signed_at_of",
    "stored_body",
    "to_us",
    "witness_record",
]

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
READ_BATCH = 1000  # rows per read: building them runs on the event loop too
#: events hashed between yields to the event loop: a catch-up of thousands of events
#: must not stall the chat and signalling on the same loop for tens of milliseconds
YIELD_EVERY = 256


SIGNED_AT_PREFIX = "signed-at "


def signed_at_line(us: int) -> str:
    """The checkpoint extension line that puts the signing time under the signatures."""
    return SIGNED_AT_PREFIX + from_us(us).isoformat()


def signed_at_of(checkpoint: Checkpoint) -> int | None:
    """The signing time a checkpoint's extension line states (None if it has none)."""
    for line in checkpoint.extensions:
        if line.startswith(SIGNED_AT_PREFIX):
            try:
                return to_us(datetime.fromisoformat(line[len(SIGNED_AT_PREFIX) :]))
            except (TypeError, ValueError):
                return -1
    return None


def to_us(at: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding across a key window)."""
    return (at - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    """The aware UTC datetime of :func:`to_us`."""
    return EPOCH + timedelta(microseconds=us)


class CheckpointRefused(RuntimeError):
    """The new events do not extend the chain: nothing is signed over a broken log."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        super().__init__(f"event {seq}: {reason}")


def _frontier_text(cr: CompactRange) -> str:
    return "".join(h.hex() for h in cr.hashes)


def _frontier(row: AuditCheckpoint) -> CompactRange | None:
    """The stored resume state, or None when it does not reproduce the stored root."""
    try:
        raw = bytes.fromhex(row.frontier)
        hashes = [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]
        cr = CompactRange(row.size, hashes)
    except ValueError:
        return None
    return cr if cr.root().hex() == row.root else None


async def _latest(session: AsyncSession) -> AuditCheckpoint | None:
    return (
        await session.execute(
            select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)
        )
    ).scalar_one_or_none()


async def load_checkpoints(session: AsyncSession) -> list[AuditCheckpoint]:
    """Every stored checkpoint, smallest first."""
    return list(
        (await session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.size))).scalars()
    )


_STORED_ORDER = (
    "seq",
    "ts_us",
    "actor_id",
    "actor_role",
    "session_ref",
    "type",
    "payload",
    "prev_hash",
    "hash",
    "format",
)
if tuple(AuditEvent.__table__.columns.keys()) != _STORED_ORDER:  # pragma: no cover
    raise ImportError("audit_events columns changed order: update stored_body")


def stored_body(row: Any) -> tuple[int, str, str, int, bytes]:
    """(seq, prev_hash, hash, format, canonical bytes) of a row of
    ``select(audit_events)``; ``ValueError`` for an unknown format.

    Positional: rows of a whole-table select come in column order, and reading a Row's
    fields by name costs more than hashing them.
    """
    seq, ts_us, actor_id, actor_role, session_ref, type_, payload, prev_hash, hash_, format_ = row
    body = event_bytes(
        seq=seq,
        ts_us=ts_us,
        actor_id=actor_id,
        actor_role=actor_role,
        session_ref=session_ref,
        type=type_,
        payload=payload,
        prev_hash=prev_hash,
        format=format_,
    )
    return seq, prev_hash, hash_, format_, body


async def _extend(
    db: Database, cr: CompactRange, prev_hash: str, upto: int
) -> tuple[CompactRange, str]:
    """Add events ``cr.size + 1 .. upto`` after checking their links (short read sessions,
    so a long catch-up never holds SQLite's single connection for long)."""
    table = AuditEvent.__table__
    while cr.size < upto:
        async with db.reads() as session:
            rows: Sequence[Any] = (
                await session.execute(
                    select(table)
                    .where(table.c.seq > cr.size, table.c.seq <= upto)
                    .order_by(table.c.seq)
                    .limit(READ_BATCH)
                )
            ).all()
        if not rows:
            raise CheckpointRefused(cr.size + 1, "event is missing")
        for i, row in enumerate(rows):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if row.seq != cr.size + 1:
                raise CheckpointRefused(cr.size + 1, "event is missing")
            try:
                seq, row_prev, row_hash, format_, body = stored_body(row)
                if row_prev != prev_hash:
                    raise CheckpointRefused(seq, "link to the previous event is broken")
                computed, leaf = hash_and_leaf(format_, prev_hash, body)
            except (ValueError, TypeError):
                raise CheckpointRefused(row.seq, "event is malformed") from None
            if computed != row_hash:
                raise CheckpointRefused(seq, "event content does not match its hash")
            cr.append(leaf)
            prev_hash = row_hash
    return cr, prev_hash


async def create_checkpoint(
    db: Database, keys: KeyRegistry, *, origin: str, at: datetime | None = None
) -> AuditCheckpoint | None:
    """Sign and store a checkpoint of every committed event; None when nothing is new.

    Resumes from the newest stored checkpoint's compact range, so the cost is the new
    events only. Raises :class:`CheckpointRefused` over a broken chain and
    :class:`audit.checkpoint.CheckpointError` when no key may sign at ``at``.
    """
    async with db.reads() as session:
        latest = await _latest(session)
        head = (await session.execute(select(AuditHead.seq).where(AuditHead.id == 1))).scalar()
    head_seq = int(head or 0)
    cr: CompactRange | None = None
    prev = GENESIS_HASH
    if latest is not None:
        if head_seq <= latest.size:
            return None
        cr = _frontier(latest)
        prev = latest.last_hash
        if cr is None:
            logger.warning("checkpoint %d has a bad resume state; re-reading the log", latest.size)
    if cr is None:
        cr, prev = CompactRange(), GENESIS_HASH
    cr, prev = await _extend(db, cr, prev, head_seq)
    if cr.size == (latest.size if latest is not None else 0):
        return None  # an empty log has nothing to sign
    when = at or datetime.now(UTC)
    root = cr.root()
    note = sign_checkpoint(
        Checkpoint(origin, cr.size, root, (signed_at_line(to_us(when)),)), keys, at=when
    )
    row = AuditCheckpoint(
        size=cr.size,
        root=root.hex(),
        note=note,
        signed_at_us=to_us(when),
        last_hash=prev,
        frontier=_frontier_text(cr),
        published=False,
    )

    def insert(session: Session) -> None:
        session.add(row)
        session.flush()  # a concurrent signer's row shows here, as this unit's error

    try:
        # the group-commit writer's blocking connection: the write lock is held for the
        # insert only, not across event-loop turns
        await db.writer.run(insert)
    except IntegrityError:
        logger.info("checkpoint %d was already made by another process", cr.size)
        return None
    logger.info("signed audit checkpoint of size %d", cr.size)
    return row


# ---------------------------------------------------------------------------- witnesses


@dataclass(frozen=True)
class WitnessRecord:
    """A checkpoint as a witness holds it: the signed note and when it was signed."""

    note: str
    signed_at_us: int

    @property
    def signed_at(self) -> datetime:
        return from_us(self.signed_at_us)


def witness_record(row: AuditCheckpoint, origin: str) -> dict[str, Any]:
    """The JSON object published for ``row``."""
    return {
        "origin": origin,
        "size": row.size,
        "root": row.root,
        "signed_at": from_us(row.signed_at_us).isoformat(),
        "signed_at_us": row.signed_at_us,
        "note": row.note,
    }


def read_witness_file(path: str | os.PathLike[str]) -> list[WitnessRecord]:
    """Parse a witness file; raises ``ValueError`` naming the first bad line."""
    records: list[WitnessRecord] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                note, us = obj["note"], obj["signed_at_us"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"witness file line {number} is not a witness record") from None
            if not isinstance(note, str) or not isinstance(us, int) or isinstance(us, bool):
                raise ValueError(f"witness file line {number} is not a witness record")
            records.append(WitnessRecord(note, us))
    return records


class Witness:
    """Where checkpoints are published: a file (appended, fsynced) and/or a URL (POST)."""

    def __init__(self, *, file: Path | None = None, url: str = "", timeout_s: float = 10.0):
        self.file = file
        self.url = url
        self.timeout_s = timeout_s

    @property
    def configured(self) -> bool:
        return self.file is not None or bool(self.url)

    async def publish(self, records: Sequence[dict[str, Any]]) -> None:
        """Send records in order; raises ``OSError``/``aiohttp.ClientError`` on failure."""
        if self.file is not None:
            await asyncio.to_thread(self._append, list(records))
        if self.url:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                for record in records:
                    async with http.post(self.url, json=record) as resp:
                        if resp.status >= 300:
                            raise aiohttp.ClientResponseError(
                                resp.request_info, (), status=resp.status, message="refused"
                            )

    def _append(self, records: list[dict[str, Any]]) -> None:
        assert self.file is not None
        self.file.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        with open(self.file, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


# --------------------------------------------------------------------------- background


class Checkpointer:
    """Signs checkpoints every ``every_events`` events or ``interval_s``, and at shutdown.

    Polls the chain head every ``poll_s`` (one indexed read). Failures are logged and
    retried on the next tick; unpublished checkpoints are re-sent until witnesses take them.
    """

    def __init__(
        self,
        db: Database,
        keys: KeyRegistry,
        *,
        origin: str,
        every_events: int = 1000,
        interval_s: float = 60.0,
        witness: Witness | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.db = db
        self.keys = keys
        self.origin = origin
        self.every_events = every_events
        self.interval_s = interval_s
        self.witness = witness or Witness()
        self.poll_s = poll_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._size = 0
        self._last = time.monotonic()

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> Checkpointer:
        from audit.signing import registry_from_settings

        return cls(
            db,
            registry_from_settings(settings),
            origin=settings.audit_origin,
            every_events=settings.checkpoint_events,
            interval_s=settings.checkpoint_interval_s,
            witness=Witness(file=settings.witness_file, url=settings.witness_url),
        )

    async def start(self) -> None:
        """Start the background task."""
        async with self.db.reads() as session:
            latest = await _latest(session)
        self._size = latest.size if latest is not None else 0
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-checkpoints")

    async def stop(self) -> None:
        """Stop the task, then sign whatever is new (a shutdown checkpoint)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.checkpoint_now()
        except Exception:
            logger.exception("shutdown checkpoint failed")

    async def checkpoint_now(self) -> AuditCheckpoint | None:
        """Sign a checkpoint now if events are new, and publish what witnesses lack."""
        async with self._lock:
            row = await create_checkpoint(self.db, self.keys, origin=self.origin)
            if row is not None:
                self._size = row.size
            self._last = time.monotonic()
            await self._publish_pending()
            return row

    async def _publish_pending(self) -> None:
        if not self.witness.configured:
            return
        async with self.db.reads() as session:
            rows = list(
                (
                    await session.execute(
                        select(AuditCheckpoint)
                        .where(AuditCheckpoint.published.is_(False))
                        .order_by(AuditCheckpoint.size)
                        .limit(100)
                    )
                ).scalars()
            )
        if not rows:
            return
        try:
            await self.witness.publish([witness_record(r, self.origin) for r in rows])
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning(
                "witness did not take %d checkpoint(s): %s", len(rows), type(exc).__name__
            )
            return
        async with self.db.transaction() as session:
            await session.execute(
                update(AuditCheckpoint)
                .where(AuditCheckpoint.size.in_([r.size for r in rows]))
                .values(published=True)
            )
        logger.info("published %d checkpoint(s) to the witness", len(rows))

    async def _due(self) -> bool:
        async with self.db.reads() as session:
            head = (await session.execute(select(AuditHead.seq).where(AuditHead.id == 1))).scalar()
        new = int(head or 0) - self._size
        if new <= 0:
            self._last = time.monotonic()
            return False
        return new >= self.every_events or time.monotonic() - self._last >= self.interval_s

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                if await self._due():
                    await self.checkpoint_now()
            except asyncio.CancelledError:
                raise
            except CheckpointRefused as exc:
                logger.error("not signing a checkpoint over a broken log at event %d", exc.seq)
            except CheckpointError as exc:
                logger.error("cannot sign a checkpoint: %s", exc)
            except Exception:
                logger.exception("checkpoint failed")
