"""The chain check's fast path accepts exactly what the careful path accepts: over random
tamperings of an in-memory log, feeding in batches (fast path, falling back) and feeding
event by event (careful path only) stop at the same event with the same reason and
build the same tree."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import audit.chain_check
from audit.chain_check import ChainFeeder, Malformed
from audit.log import row_bytes
from audit.merkle import MerkleTree, ProofError, leaf_hash
from tests.audit.conftest import make_events

N = 40
EVENTS = make_events(N, chained=15)  # a mixed log: format 1, then format 2 from event 16
FIELDS = (
    *("seq", "ts_us", "actor_id", "actor_role", "session_ref", "type", "payload", "prev_hash"),
    "format",
)


@st.composite
def tampered(draw: st.DrawFn) -> list[Any]:
    rows: list[Any] = list(EVENTS)
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["edit", "delete", "insert", "swap", "malformed", "hash"]))
        i = draw(st.integers(0, len(rows) - 1))
        if kind == "edit" and not isinstance(rows[i], Malformed):
            field = draw(st.sampled_from(FIELDS))
            value = draw(st.sampled_from([None, 0, 1, 2, i, "x", "{}", 2.5, True, "0" * 64]))
            rows[i] = replace(rows[i], **{field: value})
        elif kind == "delete":
            del rows[i]
        elif kind == "insert":
            rows.insert(i, rows[draw(st.integers(0, len(rows) - 1))])
        elif kind == "swap":
            j = draw(st.integers(0, len(rows) - 1))
            rows[i], rows[j] = rows[j], rows[i]
        elif kind == "malformed":
            rows.insert(i, Malformed(i + 2, "not a JSON record"))
        elif kind == "hash" and not isinstance(rows[i], Malformed):
            rows[i] = replace(rows[i], hash=draw(st.sampled_from(["", "0" * 64, "A" * 64])))
    return rows


def _careful(rows: list[Any]) -> ChainFeeder:
    feeder = ChainFeeder()
    for row in rows:
        if not feeder.feed(row):
            break
    return feeder


@settings(max_examples=300, deadline=None)
@given(rows=tampered(), batch=st.integers(1, 9))
def test_batched_feeding_matches_event_by_event(rows: list[Any], batch: int) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(audit.chain_check, "BATCH", batch)  # batch edges at every position
        fast = ChainFeeder()
        fast.feed_all(rows)
    fast.end(None)
    slow = _careful(rows)
    slow.end(None)
    assert (fast.failure, fast.count, fast.prev_hex) == (slow.failure, slow.count, slow.prev_hex)
    assert fast.tree.root() == slow.tree.root()
    assert fast.tree.size == fast.count


@pytest.mark.parametrize("chained", [0, 15, N])
def test_an_intact_log_builds_its_tree(chained: int) -> None:
    events = make_events(N, chained=chained)
    feeder = ChainFeeder()
    assert feeder.feed_all(events)
    assert feeder.count == N and feeder.failure is None
    expected = MerkleTree(leaf_hash(row_bytes(e)) for e in events)
    assert feeder.tree.root() == expected.root()
    # a format-2 event's hash is its leaf: the tree's leaves are the stored hashes
    for e in events[chained:]:
        assert feeder.tree.leaf_hash(e.seq - 1).hex() == e.hash


def test_extend_packed_equals_extend_and_checks_its_length() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(37)]
    one, two = MerkleTree(leaves[:5]), MerkleTree(leaves[:5])
    one.extend(leaves[5:])
    two.extend_packed(b"".join(leaves[5:]))
    assert one.root() == two.root() and one.consistency_proof(5) == two.consistency_proof(5)
    with pytest.raises(ProofError):
        two.extend_packed(b"\x00" * 33)
