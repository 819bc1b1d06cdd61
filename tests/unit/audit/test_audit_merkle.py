"""Property tests for audit.merkle against a naive RFC 6962 reference."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    ProofError,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300

# Timing varies on shared CI machines; correctness, not speed, is tested here.
NO_DEADLINE = settings(deadline=None)


# -- naive reference straight from RFC 6962 §2.1 -------------------------------------


def ref_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def make_leaves(n: int) -> list[bytes]:
    return [f"event-{i}".encode() for i in range(n)]


# One shared tree of MAX_SIZE leaves; smaller trees are its prefixes.
LEAVES = make_leaves(MAX_SIZE)
TREE = MerkleTree(leaf_hash(x) for x in LEAVES)
ROOTS = [ref_mth(LEAVES[:n]) for n in range(MAX_SIZE + 1)]


def flip(proof: list[bytes], which: int, byte: int, bit: int) -> list[bytes]:
    out = list(proof)
    target = bytearray(out[which % len(out)])
    target[byte % len(target)] ^= 1 << bit
    out[which % len(out)] = bytes(target)
    return out


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, MAX_SIZE))
    return n, draw(st.integers(0, n - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(0, MAX_SIZE))
    return draw(st.integers(0, n)), n


# -- roots ---------------------------------------------------------------------------


def test_known_vectors() -> None:
    assert EMPTY_ROOT.hex() == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert MerkleTree().root() == EMPTY_ROOT
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_roots_match_reference_for_every_size() -> None:
    for n in range(MAX_SIZE + 1):
        assert TREE.root(n) == ROOTS[n]


def test_compact_range_tracks_every_root() -> None:
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT
    for n, leaf in enumerate(LEAVES, start=1):
        cr.append(leaf_hash(leaf))
        assert cr.size == n
        assert len(cr.hashes) == bin(n).count("1")
        assert cr.root() == ROOTS[n]


@settings(NO_DEADLINE)
@given(st.integers(0, MAX_SIZE), st.integers(0, 40))
def test_compact_range_resume(n: int, extra: int) -> None:
    saved = TREE.compact_range(n)
    resumed = CompactRange(saved.size, saved.hashes)
    for leaf in LEAVES[n : n + extra]:
        resumed.append(leaf_hash(leaf))
    assert resumed.root() == ROOTS[min(n + extra, MAX_SIZE)]


def test_compact_range_rejects_bad_state() -> None:
    with pytest.raises(ValueError):
        CompactRange(3, [b"x" * 32])
    with pytest.raises(ValueError):
        CompactRange(1, [b"short"])
    with pytest.raises(ValueError):
        CompactRange(-1)


def test_tree_accessors() -> None:
    assert len(TREE) == TREE.size == MAX_SIZE
    assert TREE.leaf_hash(7) == leaf_hash(LEAVES[7])
    with pytest.raises(IndexError):
        TREE.leaf_hash(MAX_SIZE)
    with pytest.raises(ValueError):
        TREE.root(MAX_SIZE + 1)
    with pytest.raises(ValueError):
        TREE.append(b"too short")
    t = MerkleTree()
    assert t.append_data(b"a") == 0
    assert t.append_data(b"b") == 1
    assert t.root() == ref_mth([b"a", b"b"])


# -- inclusion -----------------------------------------------------------------------


@settings(NO_DEADLINE, max_examples=300)
@given(size_and_index())
def test_inclusion_matches_reference_and_verifies(si: tuple[int, int]) -> None:
    n, m = si
    proof = TREE.inclusion_proof(m, n)
    assert proof == ref_path(m, LEAVES[:n])
    verify_inclusion(leaf_hash(LEAVES[m]), m, n, proof, ROOTS[n])
    assert root_from_inclusion_proof(leaf_hash(LEAVES[m]), m, n, proof) == ROOTS[n]


@settings(NO_DEADLINE, max_examples=200)
@given(size_and_index(), st.integers(0, 10**6), st.integers(0, 31), st.integers(0, 7))
def test_inclusion_flipped_bit_fails(si: tuple[int, int], which: int, byte: int, bit: int) -> None:
    n, m = si
    proof = TREE.inclusion_proof(m, n)
    leaf = leaf_hash(LEAVES[m])
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, m, n, flip(proof, which, byte, bit), ROOTS[n])
    bad_leaf = flip([leaf], 0, byte, bit)[0]
    with pytest.raises(ProofError):
        verify_inclusion(bad_leaf, m, n, proof, ROOTS[n])
    bad_root = flip([ROOTS[n]], 0, byte, bit)[0]
    with pytest.raises(ProofError):
        verify_inclusion(leaf, m, n, proof, bad_root)


@settings(NO_DEADLINE, max_examples=200)
@given(size_and_index(), st.integers(0, MAX_SIZE))
def test_inclusion_wrong_index_fails(si: tuple[int, int], other: int) -> None:
    n, m = si
    if other == m:
        return
    proof = TREE.inclusion_proof(m, n)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(LEAVES[m]), other, n, proof, ROOTS[n])


@settings(NO_DEADLINE, max_examples=200)
@given(size_and_index(), st.integers(1, MAX_SIZE))
def test_inclusion_wrong_size_fails(si: tuple[int, int], other: int) -> None:
    # A checkpoint binds size and root together, so the claimed (wrong) size
    # comes with that size's genuine root.
    n, m = si
    if other == n:
        return
    proof = TREE.inclusion_proof(m, n)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(LEAVES[m]), m, other, proof, ROOTS[other])


@settings(NO_DEADLINE)
@given(size_and_index(), st.integers(0, 3))
def test_inclusion_truncated_or_extended_fails(si: tuple[int, int], extra: int) -> None:
    n, m = si
    proof = TREE.inclusion_proof(m, n)
    leaf = leaf_hash(LEAVES[m])
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, m, n, proof[:-1], ROOTS[n])
    with pytest.raises(ProofError):
        verify_inclusion(leaf, m, n, [*proof, *([b"\x00" * 32] * (extra + 1))], ROOTS[n])


def test_inclusion_argument_errors() -> None:
    leaf = leaf_hash(LEAVES[0])
    for index, size in [(0, 0), (-1, 5), (5, 5)]:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, [], ROOTS[1])
    with pytest.raises(ProofError):
        verify_inclusion(leaf, 0, 2, [b"short"], ROOTS[2])
    with pytest.raises(IndexError):
        TREE.inclusion_proof(10, 10)
    verify_inclusion(leaf, 0, 1, [], ROOTS[1])


# -- consistency ---------------------------------------------------------------------


@settings(NO_DEADLINE, max_examples=300)
@given(two_sizes())
def test_consistency_matches_reference_and_verifies(sizes: tuple[int, int]) -> None:
    m, n = sizes
    proof = TREE.consistency_proof(m, n)
    expected = [] if m in (0, n) else ref_subproof(m, LEAVES[:n], True)
    assert proof == expected
    verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


@settings(NO_DEADLINE, max_examples=200)
@given(two_sizes(), st.integers(0, 10**6), st.integers(0, 31), st.integers(0, 7))
def test_consistency_flipped_bit_fails(
    sizes: tuple[int, int], which: int, byte: int, bit: int
) -> None:
    m, n = sizes
    proof = TREE.consistency_proof(m, n)
    if proof:
        with pytest.raises(ProofError):
            verify_consistency(m, n, ROOTS[m], ROOTS[n], flip(proof, which, byte, bit))
    with pytest.raises(ProofError):
        verify_consistency(m, n, flip([ROOTS[m]], 0, byte, bit)[0], ROOTS[n], proof)
    if m != 0:  # from the empty tree, any new root is consistent
        with pytest.raises(ProofError):
            verify_consistency(m, n, ROOTS[m], flip([ROOTS[n]], 0, byte, bit)[0], proof)


@settings(NO_DEADLINE, max_examples=200)
@given(two_sizes(), st.integers(0, MAX_SIZE), st.integers(0, MAX_SIZE))
def test_consistency_wrong_sizes_fail(sizes: tuple[int, int], m2: int, n2: int) -> None:
    m, n = sizes
    if (m2, n2) == (m, n) or not 0 < m2 <= n2 or m in (0, n):
        return
    proof = TREE.consistency_proof(m, n)
    with pytest.raises(ProofError):
        verify_consistency(m2, n2, ROOTS[m2], ROOTS[n2], proof)


@settings(NO_DEADLINE)
@given(two_sizes())
def test_consistency_truncated_or_extended_fails(sizes: tuple[int, int]) -> None:
    m, n = sizes
    proof = TREE.consistency_proof(m, n)
    if proof:
        with pytest.raises(ProofError):
            verify_consistency(m, n, ROOTS[m], ROOTS[n], proof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(m, n, ROOTS[m], ROOTS[n], [*proof, b"\x00" * 32])


def test_consistency_edge_cases() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    with pytest.raises(ProofError):
        verify_consistency(5, 5, ROOTS[5], ROOTS[6], [])
    with pytest.raises(ProofError):
        verify_consistency(0, 5, ROOTS[1], ROOTS[5], [])
    with pytest.raises(ProofError):
        verify_consistency(6, 5, ROOTS[6], ROOTS[5], [])
    with pytest.raises(ProofError):
        verify_consistency(3, 5, ROOTS[3], ROOTS[5], [])
    with pytest.raises(ValueError):
        TREE.consistency_proof(5, 4)


def test_rfc_example_tree_shape() -> None:
    # RFC 6962 §2.1.3: the 7-leaf example tree's proofs.
    leaves = [leaf_hash(x) for x in LEAVES[:7]]
    t = MerkleTree(leaves)
    a, b = node_hash(leaves[0], leaves[1]), node_hash(leaves[2], leaves[3])
    c, d = node_hash(leaves[0], leaves[1]), leaves[6]
    i = node_hash(leaves[4], leaves[5])
    k = node_hash(a, b)
    assert t.inclusion_proof(0, 7) == [leaves[1], b, node_hash(i, d)]
    assert t.inclusion_proof(3, 7) == [leaves[2], c, node_hash(i, d)]
    assert t.inclusion_proof(6, 7) == [i, k]
    assert t.consistency_proof(3, 7) == [leaves[2], leaves[3], a, node_hash(i, d)]
    assert t.consistency_proof(4, 7) == [node_hash(i, d)]
    assert t.consistency_proof(6, 7) == [i, d, k]


@settings(NO_DEADLINE)
@given(st.lists(st.integers(0, 40), max_size=8), st.booleans())
def test_extend_in_batches_equals_appends(batches: list[int], single_first: bool) -> None:
    one_by_one = MerkleTree()
    batched = MerkleTree()
    pos = 0
    for count in batches:
        chunk = [leaf_hash(x) for x in LEAVES[pos : pos + count]]
        pos += len(chunk)
        for h in chunk:
            one_by_one.append(h)
        if single_first and chunk:
            batched.append(chunk[0])
            batched.extend(chunk[1:])
        else:
            batched.extend(chunk)
    assert batched.size == one_by_one.size == pos
    assert batched._levels == one_by_one._levels
    assert batched.root() == ROOTS[pos]


def test_extend_is_all_or_nothing() -> None:
    t = MerkleTree([leaf_hash(b"a")])
    with pytest.raises(ValueError):
        t.extend([leaf_hash(b"b"), b"bad"])
    assert t.size == 1 and t.root() == ref_mth([b"a"])
