"""Helpers for the tamper-evidence tests: signing keys, filling the log, in-memory logs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.checkpoints import signed_at_line, to_us
from audit.keys import KeyRegistry, SigningKey, load_signing_key
from audit.log import (
    GENESIS_HASH,
    Actor,
    NewEvent,
    append_many,
    canonical_json,
    link_hash,
    row_bytes,
)
from audit.merkle import MerkleTree, leaf_hash
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


async def fill(db: Database, n: int, *, contact: str | None = None, start: int = 0) -> None:
    """Append ``n`` events in one transaction; events alternate between two contacts
    unless ``contact`` is given."""
    async with db.transaction() as session:
        await append_many(
            session,
            [
                NewEvent(
                    "test.event",
                    {"i": start + i, "name": "李雷"},
                    Actor(1, "agent"),
                    contact or f"c{(start + i) % 2}",
                )
                for i in range(n)
            ],
        )


def make_events(n: int, *, start_ts: int = 1_700_000_000_000_000) -> list[ExportedEvent]:
    """A valid in-memory log of ``n`` events (as the database would store them)."""
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
        )
        ev.hash = prev = link_hash(prev, row_bytes(ev))
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
