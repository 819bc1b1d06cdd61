"""Tests for audit.keys and audit.checkpoint: C2SP signed notes, rotation, tampering."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointVerificationError,
    NoteSignature,
    SignedNote,
    open_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)
from audit.keys import (
    KeyRegistry,
    KeyRegistryError,
    SigningKey,
    VerifierKey,
    load_signing_key,
    note_key_id,
)
from audit.merkle import MerkleTree, leaf_hash

ORIGIN = "vbank.example/audit"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 7, 1, tzinfo=UTC)  # new key starts
T2 = datetime(2025, 8, 1, tzinfo=UTC)  # old key stops signing
SEED_OLD = bytes(range(32))
SEED_NEW = bytes(range(32, 64))

OLD = load_signing_key(ORIGIN, SEED_OLD, not_before=T0, not_after=T2)
NEW = load_signing_key(ORIGIN, SEED_NEW, not_before=T1)
REGISTRY = KeyRegistry([OLD, NEW])
PUBLIC = REGISTRY.public_only()

# Timing varies on shared CI machines; correctness, not speed, is tested here.
NO_DEADLINE = settings(deadline=None)


def checkpoint(size: int = 5) -> Checkpoint:
    tree = MerkleTree(leaf_hash(b"%d" % i) for i in range(size))
    return Checkpoint(ORIGIN, size, tree.root())


# -- keys ----------------------------------------------------------------------------


def test_key_id_and_verifier_string_follow_signed_note() -> None:
    pub = OLD.public.public_key
    digest = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + pub).digest()
    assert OLD.key_id == int.from_bytes(digest[:4], "big") == note_key_id(ORIGIN, pub)
    vkey = OLD.public.verifier_string()
    name, hex_id, blob = vkey.split("+", 2)
    assert (name, hex_id) == (ORIGIN, f"{OLD.key_id:08x}")
    assert base64.b64decode(blob) == b"\x01" + pub
    assert VerifierKey.parse(vkey).public_key == pub


def test_go_note_compatibility_vector() -> None:
    # Signer/verifier pair from golang.org/x/mod/sumdb/note's package example.
    skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    key = load_signing_key("PeterNeumann", skey)
    assert key.public.verifier_string() == vkey
    text = "If you think cryptography is the answer to your problem,\n"
    text += "then you don't know what your problem is.\n"
    note = sign_note(text, [key])
    assert note.endswith(
        "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p"
        "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    )
    parsed, signers = open_note(note, KeyRegistry([VerifierKey.parse(vkey)]), at=T0)
    assert parsed.text == text and signers[0].name == "PeterNeumann"


def test_load_signing_key_formats() -> None:
    priv = Ed25519PrivateKey.from_private_bytes(SEED_OLD)
    pem = priv.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    enc_pem = priv.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    forms: list[bytes | str] = [pem, pem.decode(), base64.b64encode(SEED_OLD).decode()]
    for form in forms:
        assert load_signing_key(ORIGIN, form).key_id == OLD.key_id
    assert load_signing_key(ORIGIN, enc_pem, password=b"pw").key_id == OLD.key_id
    assert load_signing_key(ORIGIN, OLD.private_pem()).key_id == OLD.key_id
    bad: list[bytes | str] = [b"\xff" * 31, "not a key", "-----BEGIN PRIVATE KEY-----\nxx\n"]
    for form in bad:
        with pytest.raises(KeyRegistryError):
            load_signing_key(ORIGIN, form)
    with pytest.raises(KeyRegistryError):
        load_signing_key(ORIGIN, enc_pem, password=b"wrong")
    with pytest.raises(KeyRegistryError):
        load_signing_key(
            "other",
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        )


def test_key_validation() -> None:
    for name in ["", "has space", "a+b", "tab\tname", "nb\u00a0sp"]:
        with pytest.raises(KeyRegistryError):
            SigningKey.generate(name)
    with pytest.raises(KeyRegistryError):
        SigningKey.generate("k", not_before=datetime(2025, 1, 1))  # naive
    with pytest.raises(KeyRegistryError):
        SigningKey.generate("k", not_before=T2, not_after=T1)
    with pytest.raises(KeyRegistryError):
        VerifierKey.parse(OLD.public.verifier_string().replace(f"{OLD.key_id:08x}", "00000000"))
    with pytest.raises(KeyRegistryError):
        VerifierKey.parse("name+deadbeef")
    k = SigningKey.generate(
        "k", not_before=datetime(2025, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    )
    assert k.not_before == T0
    assert "private_key" not in repr(k)


def test_registry_windows_and_manifest() -> None:
    assert REGISTRY.signers_at(T0) == [OLD]
    assert {k.key_id for k in REGISTRY.signers_at(T1)} == {OLD.key_id, NEW.key_id}
    assert REGISTRY.signers_at(T2) == [NEW]
    assert REGISTRY.signers_at(T0 - timedelta(seconds=1)) == []
    assert PUBLIC.signers_at(T1) == []
    assert len(PUBLIC) == 2
    rebuilt = KeyRegistry.from_public_manifest(REGISTRY.public_manifest())
    assert sorted(rebuilt.verifier_strings()) == sorted(REGISTRY.verifier_strings())
    assert rebuilt.lookup(ORIGIN, OLD.key_id) == OLD.public
    with pytest.raises(KeyRegistryError):
        KeyRegistry([VerifierKey(ORIGIN, OLD.public.public_key, T0, T1), OLD])


# -- checkpoints ---------------------------------------------------------------------


def test_round_trip() -> None:
    cp = checkpoint(5)
    note = sign_checkpoint(cp, REGISTRY, at=T0)
    text, _, sig = note.partition("\n\n")
    assert text.split("\n") == [ORIGIN, "5", base64.b64encode(cp.root_hash).decode()]
    assert sig.startswith(f"\u2014 {ORIGIN} ")
    got = verify_checkpoint(note, PUBLIC, at=T0, origin=ORIGIN)
    assert got.checkpoint == cp
    assert [s.key_id for s in got.signers] == [OLD.key_id]
    assert verify_checkpoint(note.encode(), PUBLIC, at=T0).checkpoint == cp
    assert SignedNote.parse(note).serialize() == note


def test_empty_tree_and_extensions_round_trip() -> None:
    cp = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest(), ("ext one",))
    assert Checkpoint.from_body(cp.body()) == cp
    note = sign_checkpoint(cp, REGISTRY, at=T2)
    assert verify_checkpoint(note, PUBLIC, at=T2).checkpoint == cp


def test_rotation_overlap_and_old_checkpoints() -> None:
    cp = checkpoint(7)
    during = sign_checkpoint(cp, REGISTRY, at=T1)
    assert len(SignedNote.parse(during).signatures) == 2
    assert len(verify_checkpoint(during, PUBLIC, at=T1).signers) == 2
    # An auditor who only knows the new key still accepts the overlap checkpoint.
    only_new = KeyRegistry([NEW.public])
    assert verify_checkpoint(during, only_new, at=T1).signers == (NEW.public,)
    # After the old window closes, new checkpoints carry only the new key ...
    after = sign_checkpoint(cp, REGISTRY, at=T2)
    assert [s.key_id for s in SignedNote.parse(after).signatures] == [NEW.key_id]
    # ... and checkpoints from before the rotation still verify at their own time.
    old_cp = sign_checkpoint(cp, REGISTRY, at=T0)
    assert verify_checkpoint(old_cp, PUBLIC, at=T0).signers == (OLD.public,)
    # But the old key does not vouch for a checkpoint claimed to be from later.
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint(old_cp, PUBLIC, at=T2)
    with pytest.raises(CheckpointError):
        sign_checkpoint(cp, REGISTRY, at=T0 - timedelta(days=1))


def _replace_body(note: str, new_text: str) -> str:
    parsed = SignedNote.parse(note)
    return SignedNote(new_text, parsed.signatures).serialize()


def test_tampered_fields_rejected() -> None:
    cp = checkpoint(9)
    note = sign_checkpoint(cp, REGISTRY, at=T0)
    lines = cp.body().split("\n")
    tampered = [
        Checkpoint("vbank.example/other", cp.size, cp.root_hash).body(),
        Checkpoint(ORIGIN, cp.size + 1, cp.root_hash).body(),
        Checkpoint(ORIGIN, cp.size, hashlib.sha256(b"x").digest()).body(),
        "\n".join([*lines[:3], "extra", ""]),
    ]
    for text in tampered:
        with pytest.raises(CheckpointVerificationError):
            verify_checkpoint(_replace_body(note, text), PUBLIC, at=T0)


@settings(NO_DEADLINE, max_examples=200)
@given(st.integers(0, 63))
def test_tampered_signature_rejected(bit: int) -> None:
    note = sign_checkpoint(checkpoint(3), REGISTRY, at=T0)
    sig = SignedNote.parse(note).signatures[0]
    raw = bytearray(sig.signature)
    raw[bit] ^= 1 << (bit % 8)
    bad = SignedNote(
        SignedNote.parse(note).text, (NoteSignature(sig.name, sig.key_id, bytes(raw)),)
    )
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint(bad.serialize(), PUBLIC, at=T0)


def test_bad_known_signature_rejects_even_next_to_good_one() -> None:
    note = sign_checkpoint(checkpoint(4), REGISTRY, at=T1)
    parsed = SignedNote.parse(note)
    good, other = parsed.signatures
    forged = NoteSignature(other.name, other.key_id, bytes(64))
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint(SignedNote(parsed.text, (good, forged)).serialize(), PUBLIC, at=T1)
    short = NoteSignature(other.name, other.key_id, b"\x01")
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint(SignedNote(parsed.text, (good, short)).serialize(), PUBLIC, at=T1)


def test_wrong_and_unknown_keys() -> None:
    cp = checkpoint(6)
    stranger = SigningKey.generate(ORIGIN, not_before=T0)
    alien = sign_checkpoint(cp, KeyRegistry([stranger]), at=T0)
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint(alien, PUBLIC, at=T0)
    # Unknown lines are ignored next to a good known signature ...
    ours = SignedNote.parse(sign_checkpoint(cp, REGISTRY, at=T0))
    mixed = SignedNote(ours.text, (*SignedNote.parse(alien).signatures, *ours.signatures))
    assert verify_checkpoint(mixed.serialize(), PUBLIC, at=T0).signers == (OLD.public,)
    # ... even when they share the name but not the key ID (a colliding impostor).
    junk = NoteSignature(ORIGIN, (OLD.key_id + 1) % 2**32, bytes(64))
    with_junk = SignedNote(ours.text, (junk, *ours.signatures))
    verify_checkpoint(with_junk.serialize(), PUBLIC, at=T0)
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint(sign_checkpoint(cp, REGISTRY, at=T0), PUBLIC, at=T0, origin="x/y")


@pytest.mark.parametrize(
    "note",
    [
        "",
        "no blank line\n",
        "text\n\n",
        "text\n\n\u2014 name c2ln\n",  # signature too short
        "text\n\n- name AAAAAAAA\n",
        "text\n\n\u2014 name AAAAAAAA",
        "text\n\n\u2014 na+me AAAAAAAA\n",
        "text\n\n\u2014 name AAAAAA==\n",
        "text\n\n\u2014 name  AAAAAAAA\n",
        "te\x01xt\n\n\u2014 name AAAAAAAA\n",
        "te\rxt\n\n\u2014 name AAAAAAAA\n",
    ],
)
def test_malformed_notes(note: str) -> None:
    with pytest.raises(CheckpointError):
        SignedNote.parse(note)


@pytest.mark.parametrize(
    "body",
    [
        "origin\n5\n",
        "origin\n05\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n\u0665\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n1_0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n99999999999999999999\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n5\nAAAA\n",
        "origin\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",
        "\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ],
)
def test_malformed_checkpoint_bodies(body: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.from_body(body)


def _note_pieces() -> st.SearchStrategy[str]:
    good = sign_checkpoint(checkpoint(2), REGISTRY, at=T1)
    atoms = st.sampled_from(
        [
            "\n",
            "\n\n",
            "\u2014 ",
            " ",
            "+",
            "=",
            ORIGIN,
            "2",
            "AAAA",
            "0",
            "\u2014",
            *good.split("\n"),
        ]
    )
    return st.lists(st.one_of(atoms, st.text(max_size=12)), max_size=12).map("".join)


@settings(NO_DEADLINE, max_examples=300)
@given(st.one_of(_note_pieces(), st.text(), st.binary()))
def test_garbage_never_crashes(note: str | bytes) -> None:
    try:
        verify_checkpoint(note, PUBLIC, at=T1)
    except CheckpointError:
        pass


@settings(NO_DEADLINE, max_examples=200)
@given(st.integers(0, 10**6), st.integers(0, 255), st.booleans())
def test_mutated_good_note_never_crashes(pos: int, value: int, delete: bool) -> None:
    good = bytearray(sign_checkpoint(checkpoint(2), REGISTRY, at=T1).encode())
    i = pos % len(good)
    if delete:
        del good[i]
    else:
        good[i] = value
    try:
        got = verify_checkpoint(bytes(good), PUBLIC, at=T1)
    except CheckpointError:
        return
    # A surviving mutation cannot have changed what was signed.
    assert got.checkpoint == checkpoint(2)


@settings(NO_DEADLINE)
@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
        lambda s: "\n" not in s
    ),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_checkpoint_body_round_trip(origin: str, size: int, root: bytes) -> None:
    cp = Checkpoint(origin, size, root)
    assert Checkpoint.from_body(cp.body()) == cp
