"""Full verification of the audit log: chain, Merkle roots, signatures, consistency, witness.

Why: an auditor must be able to show that the log was neither edited nor rewritten, and
point at the first event that is wrong. This module checks, from the database or from an
export file:

* the hash chain, event by event (an edit, deletion, insertion or reordering names the
  first bad position);
* the signature of every stored checkpoint, with the key windows at its signing time;
* that the RFC 6962 root of the first ``size`` events equals each checkpoint's root, and
  that consecutive checkpoints are consistent (RFC 6962 consistency proofs);
* truncation: the log must reach the newest checkpoint and the chain-head row;
* optionally the checkpoints a witness holds, which catches a rewrite of the whole
  database (events, chain and checkpoint table) that the database alone cannot show.

A chain that was recomputed after an edit is located to the checkpoint interval it
breaks (``first_bad_seq`` is then the first event after the last checkpoint that still
matches): a signed root says *that* its events changed, not which one.

Entry points (all return :class:`VerifyReport` unless noted):

* ``await verify_from_database(session, keys, *, witness=(), origin=None)``
* ``verify_from_export(path, keys, *, witness=(), origin=None)``
* ``await export_log(session, path, *, origin) -> int`` (events written)
* ``await verify_contact(session, contact_id, *, keys=None) -> ContactReport`` (the
  auditor console: every event of one contact proven included in the newest signed
  checkpoint; ``keys`` defaults to the registry the app installed)
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeGuard

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.chain_check import ChainFeeder, Malformed
from audit.checkpoint import CheckpointError, verify_checkpoint
from audit.checkpoints import WitnessRecord, from_us, load_checkpoints, signed_at_of, stored_body
from audit.keys import KeyRegistry
from audit.log import (
    FORMAT_CHAINED,
    FORMATS,
    GENESIS_HASH,
    EventLike,
    LoggedEvent,
    hash_and_leaf,
    iter_events,
    row_bytes,
)
from audit.merkle import MerkleTree, ProofError, verify_consistency, verify_inclusion
from audit.models import AuditEvent, AuditHead

__all__ = [
    "EXPORT_FORMAT",
    "CheckpointClaim",
    "ContactReport",
    "ExportedEvent",
    "VerifyReport",
    "clear_tree_cache",
    "contact_events",
    "event_json",
    "export_lines",
    "export_log",
    "stored_tree",
    "verify_contact",
    "verify_export_lines",
    "verify_from_database",
    "verify_from_export",
    "verify_log",
]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "vbank-audit-log/1"
_LEAF = b"\x00"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_sha256 = hashlib.sha256
_FEED_BATCH = 4096


@dataclass(frozen=True)
class CheckpointClaim:
    """A signed note and its signing time, as stored (``size`` is the row's, unsigned)."""

    size: int
    note: str
    signed_at_us: int
    source: str = "database"


@dataclass(frozen=True)
class VerifyReport:
    """What verification found; ``first_bad_seq`` names where the log first goes wrong."""

    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str = ""
    checkpoints: int = 0
    checkpoint_size: int | None = None
    root: str | None = None
    consistency_proofs: int = 0
    witnessed: int = 0
    bad_checkpoint: int | None = None
    pending: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_EVENT_KEYS = frozenset(
    "seq ts_us actor_id actor_role session type payload prev_hash hash format".split()
)


@dataclass(slots=True)
class ExportedEvent(LoggedEvent):
    """An event read back from an export file or bundle (the stored fields)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts_us": self.ts_us,
            "actor_id": self.actor_id,
            "actor_role": self.actor_role,
            "session": self.session_ref,
            "type": self.type,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "format": self.format,
        }

    @classmethod
    def from_json(cls, obj: Any, extra: frozenset[str] = frozenset()) -> ExportedEvent:
        """Strictly typed fields (no bool for int, no float), else ``ValueError``.

        No other members than the stored fields and ``extra``: a renamed member must not
        pass for an absent one. ``format`` may be absent (files written before it
        existed: format 1).
        """
        if not isinstance(obj, dict):
            raise ValueError("event is not an object")
        unknown = obj.keys() - _EVENT_KEYS - extra
        if unknown:
            raise ValueError(f"event has unknown field {min(unknown)!r}")
        format_ = obj.get("format", FORMAT_CHAINED)
        if isinstance(format_, bool) or format_ not in FORMATS:
            raise ValueError(f"event field 'format' is not one of {list(FORMATS)}")

        def get(name: str, kinds: tuple[type, ...], optional: bool = False) -> Any:
            if name not in obj:
                raise ValueError(f"event lacks {name!r}")
            value = obj[name]
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise ValueError(f"event field {name!r} has the wrong type")
            return value

        for name in ("prev_hash", "hash"):
            if not isinstance(obj.get(name), str) or not _HEX64.fullmatch(obj[name]):
                raise ValueError(f"event field {name!r} is not a lowercase hex SHA-256")
        return cls(
            seq=get("seq", (int,)),
            ts_us=get("ts_us", (int,)),
            actor_id=get("actor_id", (int,), True),
            actor_role=get("actor_role", (str,), True),
            session_ref=get("session", (str,), True),
            type=get("type", (str,)),
            payload=get("payload", (str,)),
            prev_hash=get("prev_hash", (str,)),
            hash=get("hash", (str,)),
            format=format_,
        )


def event_json(row: EventLike) -> dict[str, Any]:
    """The stored fields of an event as exported."""
    return ExportedEvent(
        row.seq,
        row.ts_us,
        row.actor_id,
        row.actor_role,
        row.session_ref,
        row.type,
        row.payload,
        row.prev_hash,
        row.hash,
        row.format,
    ).to_json()


@dataclass
class _Target:
    size: int
    root: bytes
    signed_at_us: int
    source: str


def _check_claims(
    claims: Sequence[CheckpointClaim], keys: KeyRegistry, origin: str | None
) -> tuple[list[_Target], str | None, tuple[int, str] | None]:
    """Verify every note's signatures; returns targets, the origin, or (size, reason)."""
    targets: list[_Target] = []
    for claim in sorted(claims, key=lambda c: (c.size, c.source)):
        label = "witness checkpoint" if claim.source == "witness" else "checkpoint"
        try:
            vc = verify_checkpoint(claim.note, keys, at=from_us(claim.signed_at_us), origin=origin)
        except CheckpointError as exc:
            return targets, origin, (claim.size, f"{label} {claim.size}: {exc}")
        except (OverflowError, ValueError) as exc:
            return targets, origin, (claim.size, f"{label} {claim.size}: bad signing time {exc}")
        stated = signed_at_of(vc.checkpoint)
        if stated is None:
            return targets, origin, (claim.size, f"{label} {claim.size} has no signed time")
        if stated != claim.signed_at_us:
            return targets, origin, (claim.size, f"{label} {claim.size}: signing time was changed")
        if vc.checkpoint.size != claim.size:
            return (
                targets,
                origin,
                (claim.size, f"{label} {claim.size} is signed for size {vc.checkpoint.size}"),
            )
        origin = vc.checkpoint.origin
        targets.append(
            _Target(claim.size, vc.checkpoint.root_hash, claim.signed_at_us, claim.source)
        )
    return targets, origin, None


class _Verification:
    """One verification run: claims first, then events fed in order, then the finish."""

    def __init__(
        self,
        keys: KeyRegistry,
        claims: Sequence[CheckpointClaim],
        witness: Sequence[WitnessRecord],
        origin: str | None,
    ) -> None:
        all_claims = [*claims]
        all_claims += [
            CheckpointClaim(_note_size(w.note), w.note, w.signed_at_us, "witness") for w in witness
        ]
        self.targets, self.origin, self.bad_claim = _check_claims(all_claims, keys, origin)
        self.witnessed = len(witness)
        self.chain = ChainFeeder()

    def finish(self, head: tuple[int, str] | None) -> VerifyReport:
        chain = self.chain
        chain.end(head[1] if head is not None else None)
        n = chain.count
        if self.bad_claim is not None:
            size, reason = self.bad_claim
            return VerifyReport(False, n, None, reason, bad_checkpoint=size)
        if chain.failure is not None:
            seq, reason = chain.failure
            return VerifyReport(False, min(n, seq - 1), seq, reason)
        good = 0  # the largest size below the current one whose root matched
        matched = 0
        for t in sorted(self.targets, key=lambda t: (t.size, t.source == "witness")):
            if t.size > matched:
                good = matched
            what = "witness checkpoint" if t.source == "witness" else "signed checkpoint"
            if t.size > n:
                return VerifyReport(
                    False,
                    n,
                    n + 1,
                    f"log ends at event {n}, {what} says {t.size}",
                    bad_checkpoint=t.size,
                )
            if not hmac.compare_digest(chain.tree.root(t.size), t.root):
                reason = f"events {good + 1}..{t.size} do not match the {what} of size {t.size}"
                return VerifyReport(False, n, good + 1, reason, bad_checkpoint=t.size)
            matched = t.size
        proofs = 0
        sizes = sorted({t.size: t for t in self.targets}.values(), key=lambda t: t.size)
        for a, b in itertools.pairwise(sizes):
            try:
                verify_consistency(
                    a.size, b.size, a.root, b.root, chain.tree.consistency_proof(a.size, b.size)
                )
            except ProofError as exc:  # cannot happen once both roots matched; fail closed
                return VerifyReport(False, n, a.size + 1, f"consistency {a.size}->{b.size}: {exc}")
            proofs += 1
        if head is not None:
            head_seq, head_hash = head
            if head_seq != n:
                return VerifyReport(False, n, n + 1, f"log ends at event {n}, head says {head_seq}")
            if head_hash != chain.prev_hex:
                return VerifyReport(False, n, n, "last event does not match the head hash")
        stored = [t for t in self.targets if t.source != "witness"]
        newest = max(stored, key=lambda t: t.size) if stored else None
        return VerifyReport(
            True,
            n,
            checkpoints=len(stored),
            checkpoint_size=newest.size if newest else None,
            root=newest.root.hex() if newest else None,
            consistency_proofs=proofs,
            witnessed=self.witnessed,
            pending=n - (newest.size if newest else 0),
        )


def _note_size(note: str) -> int:
    """The size a note claims (its second line), for ordering; -1 if unreadable."""
    lines = note.split("\n", 2)
    try:
        return int(lines[1])
    except (IndexError, ValueError):
        return -1


def verify_log(
    events: Iterable[EventLike | Malformed],
    checkpoints: Sequence[CheckpointClaim],
    keys: KeyRegistry,
    *,
    head: tuple[int, str] | None = None,
    witness: Sequence[WitnessRecord] = (),
    origin: str | None = None,
) -> VerifyReport:
    """Verify events (in stored order) against checkpoints, the head and a witness."""
    run = _Verification(keys, checkpoints, witness, origin)
    if run.bad_claim is None:
        run.chain.feed_all(events)
    return run.finish(head)


async def verify_from_database(
    session: AsyncSession,
    keys: KeyRegistry,
    *,
    witness: Sequence[WitnessRecord] = (),
    origin: str | None = None,
) -> VerifyReport:
    """Verify everything stored: events, checkpoints and the chain-head row."""
    rows = await load_checkpoints(session)
    claims = [CheckpointClaim(r.size, r.note, r.signed_at_us) for r in rows]
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one_or_none()
    run = _Verification(keys, claims, witness, origin)
    if run.bad_claim is None:
        async for batch in _event_batches(session):
            if not run.chain.feed_all(batch):
                break
    return run.finish((head.seq, head.hash) if head else (0, GENESIS_HASH))


async def _event_batches(session: AsyncSession) -> AsyncIterator[Sequence[Any]]:
    """All events in sequence order, one query result at a time (like ``iter_events``,
    without an await per event)."""
    table = AuditEvent.__table__
    last = 0
    while True:
        query = select(table).where(table.c.seq > last).order_by(table.c.seq).limit(5000)
        rows: Sequence[Any] = (await session.execute(query)).all()
        if not rows:
            return
        yield rows
        last = rows[-1].seq


# ------------------------------------------------------------------------------- export


def export_lines(
    events: Iterable[EventLike],
    checkpoints: Sequence[CheckpointClaim],
    head: tuple[int, str],
    *,
    origin: str,
    event_count: int,
) -> Iterator[str]:
    """The lines of an export file (see :func:`export_log`)."""
    yield _line(
        {
            "format": EXPORT_FORMAT,
            "origin": origin,
            "exported_at": datetime.now(UTC).isoformat(),
            "events": event_count,
            "checkpoints": len(checkpoints),
        }
    )
    for row in events:
        yield _line({"event": event_json(row)})
    for cp in checkpoints:
        yield _line(
            {"checkpoint": {"size": cp.size, "signed_at_us": cp.signed_at_us, "note": cp.note}}
        )
    yield _line({"head": {"seq": head[0], "hash": head[1]}})


async def export_log(session: AsyncSession, path: str | os.PathLike[str], *, origin: str) -> int:
    """Write the whole log as JSON lines for offline verification; returns the event count.

    Line 1 is ``{"format", "origin", "exported_at", "events", "checkpoints"}``, then
    ``{"event": {...stored fields}}`` per event in order, ``{"checkpoint": {"size",
    "signed_at_us", "note"}}`` per checkpoint and one ``{"head": {"seq", "hash"}}``. Only
    the signed notes are trusted; the counts just let a cut-short file show.
    """
    head_row = (
        await session.execute(select(AuditHead).where(AuditHead.id == 1))
    ).scalar_one_or_none()
    head = (head_row.seq, head_row.hash) if head_row else (0, GENESIS_HASH)
    claims = [
        CheckpointClaim(r.size, r.note, r.signed_at_us) for r in await load_checkpoints(session)
    ]
    rows = [row async for row in iter_events(session)]
    with open(path, "w", encoding="utf-8") as fh:  # noqa: ASYNC230 - the CLI's only job here
        fh.writelines(export_lines(rows, claims, head, origin=origin, event_count=len(rows)))
    logger.info("exported %d audit events", len(rows))
    return len(rows)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


@dataclass
class _ExportMeta:
    header: dict[str, Any] | None = None
    claims: list[CheckpointClaim] = field(default_factory=list)
    head: tuple[int, str] | None = None


def _records(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any] | Malformed]]:
    for number, raw in enumerate(lines, start=1):
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            yield number, Malformed(number, "not a JSON record")
            continue
        if not isinstance(obj, dict) or (len(obj) != 1 and "format" not in obj):
            yield number, Malformed(number, "not a log record")
            continue
        if _line(obj).encode() != raw:  # every byte counts: no spacing or escaping variants
            yield number, Malformed(number, "record is not in canonical form")
            continue
        yield number, obj


def _export_events(lines: Iterable[bytes]) -> Iterator[ExportedEvent | Malformed]:
    for number, obj in _records(lines):
        if isinstance(obj, Malformed):
            yield obj
        elif "event" in obj:
            try:
                yield ExportedEvent.from_json(obj["event"])
            except ValueError as exc:
                yield Malformed(number, str(exc))
        elif not ({"format", "checkpoint", "head"} & obj.keys()):
            yield Malformed(number, "unknown record")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _export_meta(lines: Iterable[bytes]) -> _ExportMeta:
    meta = _ExportMeta()
    for number, obj in _records(lines):
        if isinstance(obj, Malformed):
            continue
        if number == 1 and obj.get("format") == EXPORT_FORMAT:
            meta.header = obj
        cp = obj.get("checkpoint")
        if isinstance(cp, dict):
            size, us, note = cp.get("size"), cp.get("signed_at_us"), cp.get("note")
            if _is_int(size) and _is_int(us) and isinstance(note, str):
                meta.claims.append(CheckpointClaim(size, note, us, "export"))
            else:  # kept, so that it fails the signature check by name
                meta.claims.append(CheckpointClaim(size if _is_int(size) else -1, "", 0, "export"))
        hd = obj.get("head")
        if isinstance(hd, dict):
            seq, h = hd.get("seq"), hd.get("hash")
            meta.head = (seq, h) if _is_int(seq) and isinstance(h, str) else (-1, "")
    return meta


def verify_export_lines(
    read: Callable[[], Iterable[bytes]],
    keys: KeyRegistry,
    *,
    witness: Sequence[WitnessRecord] = (),
    origin: str | None = None,
) -> VerifyReport:
    """Verify export lines; ``read`` is called twice (checkpoints first, then events)."""
    meta = _export_meta(read())
    if meta.header is None:
        return VerifyReport(False, 0, None, f"not a {EXPORT_FORMAT} export")
    report = verify_log(
        _export_events(read()), meta.claims, keys, head=meta.head, witness=witness, origin=origin
    )
    if not report.ok:
        return report
    n = report.events
    listed = meta.header.get("events")
    if _is_int(listed) and listed != n:
        return replace(
            report,
            ok=False,
            first_bad_seq=n + 1,
            reason=f"export ends at event {n}, lists {listed}",
        )
    if meta.head is None:
        return replace(report, ok=False, reason="export has no head record (cut short?)")
    if meta.header.get("checkpoints") != len(meta.claims):
        reason = (
            f"export lists {meta.header.get('checkpoints')} checkpoints, has {len(meta.claims)}"
        )
        return replace(report, ok=False, reason=reason)
    return report


def verify_from_export(
    path: str | os.PathLike[str],
    keys: KeyRegistry,
    *,
    witness: Sequence[WitnessRecord] = (),
    origin: str | None = None,
) -> VerifyReport:
    """Verify an :func:`export_log` file offline (public keys suffice)."""

    def read() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            yield from fh

    return verify_export_lines(read, keys, witness=witness, origin=origin)


# ------------------------------------------------------------------ one contact (console)


@dataclass(frozen=True)
class ContactReport:
    """One contact's events against the newest signed checkpoint.

    ``status``: ``verified`` (every event proven included), ``pending`` (intact, but the
    newest events are not yet covered by a checkpoint; ``ok`` stays True) or ``failed``.
    """

    ok: bool
    status: str
    reason: str
    contact_id: str
    events: int = 0
    verified: int = 0
    pending: int = 0
    first_bad_seq: int | None = None
    checkpoint_size: int | None = None
    checkpoint_root: str | None = None
    signed_at: datetime | None = None
    signers: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["signed_at"] = self.signed_at.isoformat() if self.signed_at else None
        out["signers"] = list(self.signers)
        return out


class _TreeCache:
    """Merkle trees of stored logs, by database URL, grown on demand.

    Why: the console verifies one contact at a time and each proof needs the tree of the
    whole log; re-reading a million events per click would stall the service. Leaves are
    hashed from the stored bytes when read (for a format-2 event that is its hash,
    recomputed, not copied: an edited event must not keep its old leaf); later edits of
    *this* contact's events still fail their inclusion proofs, and edits before the read
    fail the root comparison.
    """

    def __init__(self, capacity: int = 4) -> None:
        self._trees: OrderedDict[str, MerkleTree] = OrderedDict()
        self.capacity = capacity

    async def tree(self, session: AsyncSession, size: int) -> MerkleTree:
        key = str(getattr(session.bind, "url", ""))
        tree = self._trees.pop(key, None)
        if tree is None or tree.size > size:
            tree = MerkleTree()
        batch: list[bytes] = []
        async for row in _events_between(session, tree.size, size):
            if row.seq != tree.size + len(batch) + 1:
                raise LookupError(f"event {tree.size + len(batch) + 1} is missing")
            try:
                body = stored_body(row)[4]
            except (ValueError, TypeError):
                raise LookupError(f"event {row.seq} is malformed") from None
            batch.append(_sha256(_LEAF + body).digest())
            if len(batch) >= _FEED_BATCH:
                tree.extend(batch)
                batch = []
        tree.extend(batch)
        if tree.size < size:
            raise LookupError(f"log ends at event {tree.size}, checkpoint says {size}")
        self._trees[key] = tree
        while len(self._trees) > self.capacity:
            self._trees.popitem(last=False)
        return tree


_TREES = _TreeCache()


async def stored_tree(session: AsyncSession, size: int) -> MerkleTree:
    """The Merkle tree of the first ``size`` stored events (cached per database).

    Raises ``LookupError`` when the log is shorter or has a gap.
    """
    return await _TREES.tree(session, size)


def clear_tree_cache() -> None:
    """Forget cached trees (e.g. after restoring a database under the same URL)."""
    global _TREES
    _TREES = _TreeCache()


async def _events_between(session: AsyncSession, after: int, upto: int) -> AsyncIterator[Any]:
    table = AuditEvent.__table__
    last = after
    while last < upto:
        rows: Sequence[Any] = (
            await session.execute(
                select(table)
                .where(table.c.seq > last, table.c.seq <= upto)
                .order_by(table.c.seq)
                .limit(5000)
            )
        ).all()
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1].seq


async def contact_events(session: AsyncSession, contact_id: str) -> list[Any]:
    """Every stored event of one contact (``session_ref``), in sequence order."""
    table = AuditEvent.__table__
    return list(
        (
            await session.execute(
                select(table).where(table.c.session_ref == contact_id).order_by(table.c.seq)
            )
        ).all()
    )


async def verify_contact(
    session: AsyncSession, contact_id: str, *, keys: KeyRegistry | None = None
) -> ContactReport:
    """Prove each of the contact's events is in the newest signed checkpoint.

    Checks the checkpoint's signatures (key windows at its signing time), each event's
    own hash, and an RFC 6962 inclusion proof per covered event. Events newer than the
    checkpoint are reported as ``pending``.
    """
    if keys is None:
        from audit.signing import installed_registry

        keys = installed_registry()
    events = await contact_events(session, contact_id)
    leaves: dict[int, bytes] = {}
    for ev in events:
        try:
            computed, leaves[ev.seq] = hash_and_leaf(ev.format, ev.prev_hash, row_bytes(ev))
        except (ValueError, TypeError):
            computed = ""
        if computed != ev.hash:
            return ContactReport(
                False,
                "failed",
                "event content does not match its hash",
                contact_id,
                events=len(events),
                first_bad_seq=ev.seq,
            )
    rows = await load_checkpoints(session)
    if not rows:
        return ContactReport(
            True,
            "pending",
            "no signed checkpoint yet",
            contact_id,
            events=len(events),
            pending=len(events),
        )
    latest = rows[-1]
    at = from_us(latest.signed_at_us)
    try:
        vc = verify_checkpoint(latest.note, keys, at=at)
    except CheckpointError as exc:
        return ContactReport(
            False,
            "failed",
            f"checkpoint {latest.size}: {exc}",
            contact_id,
            events=len(events),
            checkpoint_size=latest.size,
        )
    cp = vc.checkpoint
    base = ContactReport(
        True,
        "verified",
        "",
        contact_id,
        events=len(events),
        checkpoint_size=cp.size,
        checkpoint_root=cp.root_hash.hex(),
        signed_at=at,
        signers=tuple(f"{k.name}+{k.key_id:08x}" for k in vc.signers),
    )
    covered = [ev for ev in events if ev.seq <= cp.size]
    pending = len(events) - len(covered)
    if covered:
        try:
            tree = await stored_tree(session, cp.size)
        except LookupError as exc:
            return replace(base, ok=False, status="failed", reason=str(exc))
        if not hmac.compare_digest(tree.root(cp.size), cp.root_hash):
            reason = f"the stored log does not match signed checkpoint {cp.size}"
            return replace(base, ok=False, status="failed", reason=reason)
        for done, ev in enumerate(covered):
            proof = tree.inclusion_proof(ev.seq - 1, cp.size)
            try:
                verify_inclusion(leaves[ev.seq], ev.seq - 1, cp.size, proof, cp.root_hash)
            except ProofError:
                reason = "event is not in the signed checkpoint"
                return replace(
                    base,
                    ok=False,
                    status="failed",
                    reason=reason,
                    first_bad_seq=ev.seq,
                    verified=done,
                )
    if pending:
        reason = f"{pending} event(s) not yet covered by a signed checkpoint"
        return replace(
            base, status="pending", reason=reason, verified=len(covered), pending=pending
        )
    reason = f"all events included in signed checkpoint {cp.size}"
    return replace(base, reason=reason, verified=len(covered))
