"""The hash chain of stored events, checked in order, and the Merkle tree of those that
pass.

Why: in CPython the per-call overhead of SHA-256 dominates, so a million events are
CPU-bound. A format-2 event (see ``audit.log``) costs one call for its hash, which is
also its RFC 6962 leaf, plus about one inner node; a format-1 event three (chain link,
leaf, node). Two paths share one outcome:

* a fast path (:meth:`ChainFeeder.feed_all`) that only *accepts* plainly good events
  (next number, linked to the previous hash, known format, hash matching) in a tight
  loop, and hands anything else to
* the careful path (:meth:`ChainFeeder.feed`), which names the first bad event (see
  the class docstring).

Accepted events' leaves are added to the tree in batches.

Measured and left out (2 cores): building the tree in a forked process fed through a
pipe (no gain: the parent's share is bound by reading the rows), and splitting the
events into ranges across forked processes (1.27x: a child touching the parent's row
objects copies their pages, about 1.3 us per event on each side).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

from sqlalchemy import Row

from audit.log import (
    FORMAT_LEAF,
    FORMATS,
    GENESIS_HASH,
    EventLike,
    event_body,
    hash_and_leaf,
    leaf_input,
)
from audit.merkle import MerkleTree
from audit.models import AuditEvent

__all__ = ["ChainFeeder", "Malformed"]

logger = logging.getLogger(__name__)

BATCH: Final = 4096  # events between hand-overs of accepted bodies to the tree
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EVENT_FIELDS = tuple(AuditEvent.__table__.columns.keys())
_FIELDS = attrgetter(*_EVENT_FIELDS)
_LEAF = b"\x00"
_END: Final = object()


@dataclass(frozen=True)
class Malformed:
    """An export line that is not a readable event, standing where an event should be."""

    line: int
    reason: str


def _self_consistent(format_: int, prev_hash: str, body: bytes, hash_: str) -> bool:
    """Whether an event's hash matches its own stored link (it was not edited alone).

    The link must be canonical hex: ``bytes.fromhex`` would also take upper case or spaces.
    """
    if not isinstance(prev_hash, str) or not _HEX64.fullmatch(prev_hash):
        return False
    try:
        return hash_and_leaf(format_, prev_hash, body)[0] == hash_
    except (ValueError, TypeError):
        return False


class ChainFeeder:
    """Checks events in order and builds the Merkle tree of those that pass.

    Rows fed to one feeder come from one query (their column order is checked once).

    Locating the first bad event: a plain edit, deletion or reordering breaks at its own
    position. A forged event with a valid link (an insertion or an edit whose own hash
    was recomputed) only breaks the *next* link; then the event at the break tells
    which one is foreign: an intact event that points at a different predecessor blames
    that predecessor, and two events claiming the same number are told apart by the
    event after them (or the head), which links to the original.
    """

    def __init__(self) -> None:
        self._tree = MerkleTree()
        self.count = 0
        self.prev_hex = GENESIS_HASH
        self._prev_raw = bytes(32)
        self._prev_prev_hex = GENESIS_HASH
        self._leaves = bytearray()  # accepted events' leaves not yet added to the tree
        self._suspect: tuple[int, str, str] | None = None  # (position, its hash, reason)
        self._row_layout: bool | None = None
        self.failure: tuple[int, str] | None = None

    @property
    def tree(self) -> MerkleTree:
        """The tree of every accepted event."""
        self.flush()
        return self._tree

    def feed_all(self, rows: Iterable[EventLike | Malformed]) -> bool:
        """Take events in order; False (and ``failure`` set) at the first bad one."""
        it = iter(rows)
        while True:
            if self._suspect is None:
                before = self.count
                row: Any = self._scan(itertools.islice(it, BATCH))
                self.flush()
                if row is _END:
                    if self.count - before < BATCH:
                        return True
                    continue
            else:
                row = next(it, _END)
                if row is _END:
                    return True
            if not self.feed(row):
                return False

    def _scan(self, rows: Iterator[Any]) -> Any:
        """Accept plainly good events and return the first other one (or ``_END``).

        Only accepts what :meth:`feed` would accept with the same state and leaf, so
        whatever stops it goes to :meth:`feed`, which says what is wrong.
        """
        sha256 = hashlib.sha256
        body_of = event_body
        leaf_of = leaf_input
        fields = _FIELDS
        leaves = self._leaves
        row_type = Row if self._row_layout else None
        expected = self.count + 1
        prev_hex, prev_raw, prev_prev_hex = self.prev_hex, self._prev_raw, self._prev_prev_hex
        row: Any = _END
        values: Any
        try:
            for row in rows:
                if type(row) is row_type:
                    values = row  # positional: a Row's attributes cost more than hashing
                else:
                    if type(row) is Row and self._row_layout is None and self._check_layout(row):
                        row_type = Row
                    try:
                        values = fields(row)
                    except AttributeError:  # a Malformed line
                        break
                seq, ts_us, actor_id, actor_role, session_ref, type_, payload, link, hash_, fmt = (
                    values
                )
                if seq != expected or link != prev_hex:
                    break
                try:  # an unknown format or a field of the wrong type raises
                    if fmt == 2:  # FORMAT_LEAF: the hash is the leaf and covers the link
                        digest = sha256(
                            leaf_of(
                                seq, ts_us, actor_id, actor_role, session_ref, type_, payload, link
                            )
                        ).digest()
                        if digest.hex() != hash_:
                            break
                        leaves += digest
                    else:  # FORMAT_CHAINED
                        body = body_of(
                            fmt, seq, ts_us, actor_id, actor_role, session_ref, type_, payload, link
                        )
                        digest = sha256(prev_raw + body).digest()
                        if digest.hex() != hash_:
                            break
                        leaves += sha256(b"\x00" + body).digest()
                except (ValueError, TypeError):
                    break
                prev_prev_hex, prev_raw, prev_hex = prev_hex, digest, hash_
                expected += 1
            else:
                row = _END
        finally:
            self.count = expected - 1
            self.prev_hex, self._prev_raw, self._prev_prev_hex = prev_hex, prev_raw, prev_prev_hex
        return row

    def feed(self, row: EventLike | Malformed) -> bool:
        """Take the next event, one at a time; False (and ``failure`` set) at a bad one."""
        if type(row) is Malformed:
            if self._suspect is not None:
                self._resolve(None)
            else:
                self.failure = (self.count + 1, f"line {row.line}: {row.reason}")
            return False
        assert not isinstance(row, Malformed)
        if type(row) is Row and (
            self._row_layout if self._row_layout is not None else self._check_layout(row)
        ):
            fields = tuple(row)
        else:
            fields = _FIELDS(row)
        seq, ts_us, actor_id, actor_role, session_ref, type_, payload, prev_hash, hash_, fmt = (
            fields
        )
        if self._suspect is not None:
            self._resolve(prev_hash)
            return False
        expected = self.count + 1
        if fmt not in FORMATS:
            self.failure = (expected, f"event has an unknown hash format {fmt!r}")
            return False
        try:
            body = event_body(
                fmt, seq, ts_us, actor_id, actor_role, session_ref, type_, payload, prev_hash
            )
        except (ValueError, TypeError):
            self.failure = (expected, "event is malformed")
            return False
        if seq != expected:
            if (
                seq == expected - 1
                and hash_ != self.prev_hex
                and prev_hash == self._prev_prev_hex
                and _self_consistent(fmt, prev_hash, body, hash_)
            ):
                # two events claim number expected - 1: the next one links to the original
                self._suspect = (expected, hash_, f"two events claim to be event {expected - 1}")
                return True
            self.failure = (expected, f"expected event {expected}, found {seq}")
            return False
        if prev_hash != self.prev_hex:
            if expected > 1 and _self_consistent(fmt, prev_hash, body, hash_):
                # intact, but after another predecessor: that one was changed, unless
                # this event is itself foreign (then the log does not go on from it)
                reason = f"event {expected} does not follow event {expected - 1}"
                self._suspect = (expected, hash_, reason)
                return True
            self.failure = (expected, "link to the previous event is broken")
            return False
        leaf = hashlib.sha256(_LEAF + body).digest()
        if fmt == FORMAT_LEAF:
            digest = leaf
        else:
            digest = hashlib.sha256(self._prev_raw + body).digest()
        if digest.hex() != hash_:
            self.failure = (expected, "event content does not match its hash")
            return False
        self._prev_prev_hex = self.prev_hex
        self._prev_raw = digest
        self.prev_hex = hash_
        self._leaves += leaf
        self.count = expected
        return True

    def _check_layout(self, row: Row[Any]) -> bool:
        """Rows of one query share their columns: check the first one's order once."""
        self._row_layout = row._fields == _EVENT_FIELDS
        return self._row_layout

    def _resolve(self, next_link: str | None) -> None:
        """If the log goes on from the suspect, the event before it is the foreign one."""
        assert self._suspect is not None
        position, suspect, reason = self._suspect
        self._suspect = None
        self.failure = (position - 1 if next_link == suspect else position, reason)

    def end(self, head_hash: str | None) -> None:
        """The stream ended; a suspect left by the last event is judged by the head."""
        if self._suspect is not None:
            self._resolve(head_hash)

    def flush(self) -> None:
        if self._leaves:
            self._tree.extend_packed(self._leaves)
            self._leaves.clear()
