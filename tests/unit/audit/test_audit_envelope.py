"""Tests for audit.envelope: round trips, random access, tamper/truncation detection, rotation."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.envelope import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    ChunkAuthenticationError,
    EnvelopeError,
    EnvelopeFormatError,
    EnvelopeHeader,
    EnvelopeInfo,
    EnvelopeReader,
    EnvelopeWriter,
    FileIdMismatchError,
    KeyUnwrapError,
    MasterKeyring,
    TruncatedEnvelopeError,
    UnknownMasterKeyError,
    bench_encrypt,
    decrypt_bytes,
    encrypt_bytes,
    read_header,
    rewrap_file,
    rewrap_header,
)

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
RING = MasterKeyring({"mk1": K1}, "mk1")
ROTATED = MasterKeyring({"mk1": K1, "mk2": K2}, "mk2")
ONLY_NEW = MasterKeyring({"mk2": K2}, "mk2")
CS = 64  # small chunks make multi-chunk files cheap for property tests

# A deterministic plaintext pool; examples take prefixes of it.
POOL = os.urandom(4 * DEFAULT_CHUNK_SIZE + 3)

# Timing varies on shared CI machines; correctness, not speed, is tested here.
NO_DEADLINE = settings(deadline=None)


def seal(data: bytes, chunk_size: int = CS, file_id: bytes | None = None) -> bytes:
    return encrypt_bytes(data, RING, chunk_size=chunk_size, file_id=file_id)


def sizes_around(cs: int) -> list[int]:
    return [0, 1, cs - 1, cs, cs + 1, 2 * cs - 1, 2 * cs, 2 * cs + 1, 3 * cs]


@pytest.mark.parametrize("size", sizes_around(DEFAULT_CHUNK_SIZE))
def test_default_chunk_round_trip(size: int) -> None:
    data = POOL[:size]
    blob = encrypt_bytes(data, RING)
    chunks = max(1, -(-size // DEFAULT_CHUNK_SIZE))
    assert len(blob) == HEADER_SIZE + size + TAG_SIZE * chunks
    assert decrypt_bytes(blob, RING) == data


@settings(NO_DEADLINE, max_examples=250)
@given(st.integers(0, 12 * CS), st.lists(st.integers(1, 3 * CS), max_size=8))
def test_streaming_round_trip_any_write_pattern(size: int, cuts: list[int]) -> None:
    data = POOL[:size]
    out = io.BytesIO()
    w = EnvelopeWriter(out, RING, chunk_size=CS)
    pos = 0
    for c in [*cuts, size]:
        w.write(data[pos : pos + c])
        pos += c
    info = w.close()
    assert info.size == size
    assert info.sha256 == hashlib.sha256(data).digest()
    assert info.ciphertext_size == len(out.getvalue())
    assert info.master_key_id == "mk1"
    with EnvelopeReader(io.BytesIO(out.getvalue()), RING, expected_file_id=w.file_id) as r:
        assert r.size == size
        assert r.read_all() == data
        assert b"".join(r.iter_chunks()) == data


@settings(NO_DEADLINE, max_examples=250)
@given(st.integers(0, 10 * CS), st.integers(0, 11 * CS), st.integers(0, 11 * CS))
def test_random_ranges_match_slices(size: int, a: int, b: int) -> None:
    data = POOL[:size]
    start, end = min(a, b), max(a, b)
    with EnvelopeReader(io.BytesIO(seal(data)), RING) as r:
        assert r.read_range(start, end) == data[start:end]
        assert r.read_range(start) == data[start:]
        assert b"".join(r.iter_range(start, end)) == data[start:end]


def test_range_reads_only_needed_chunks() -> None:
    data = POOL[: 50 * CS]
    blob = seal(data)
    reads: list[tuple[int, int]] = []

    class Spy(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            reads.append((self.tell(), -1 if n is None else n))
            return super().read(n)

    r = EnvelopeReader(Spy(blob), RING)
    reads.clear()
    assert r.read_range(10 * CS + 5, 11 * CS + 2) == data[10 * CS + 5 : 11 * CS + 2]
    assert len(reads) == 2
    with pytest.raises(ValueError):
        r.read_range(-1, 4)


@settings(NO_DEADLINE, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 5 * CS), st.integers(0, 10**9), st.integers(0, 7))
def test_any_flipped_bit_is_detected(size: int, pos: int, bit: int) -> None:
    blob = bytearray(seal(POOL[:size]))
    blob[pos % len(blob)] ^= 1 << bit
    with pytest.raises(EnvelopeError):
        decrypt_bytes(bytes(blob), RING)


@settings(NO_DEADLINE, max_examples=200)
@given(st.integers(0, 6 * CS), st.integers(0, 10**9))
def test_any_truncation_is_detected(size: int, cut: int) -> None:
    blob = seal(POOL[:size])
    keep = cut % len(blob)
    with pytest.raises(EnvelopeError):
        decrypt_bytes(blob[:keep], RING)


@pytest.mark.parametrize("size", [CS, 3 * CS, 3 * CS + 1, 5 * CS - 1])
def test_truncation_at_every_chunk_boundary(size: int) -> None:
    blob = seal(POOL[:size])
    stride = CS + TAG_SIZE
    chunks = (len(blob) - HEADER_SIZE + stride - 1) // stride
    for keep in range(chunks):
        cut = blob[: HEADER_SIZE + keep * stride]
        with pytest.raises((TruncatedEnvelopeError, ChunkAuthenticationError)):
            EnvelopeReader(io.BytesIO(cut), RING)
    if chunks > 1:
        with pytest.raises(TruncatedEnvelopeError, match="without its final chunk"):
            EnvelopeReader(io.BytesIO(blob[: HEADER_SIZE + (chunks - 1) * stride]), RING)


@settings(NO_DEADLINE, max_examples=100)
@given(st.integers(2, 6), st.data())
def test_swapped_or_duplicated_chunks_detected(n_chunks: int, data: st.DataObject) -> None:
    blob = seal(POOL[: n_chunks * CS])
    stride = CS + TAG_SIZE
    body = [
        blob[HEADER_SIZE + i * stride : HEADER_SIZE + (i + 1) * stride] for i in range(n_chunks)
    ]
    perm = data.draw(st.permutations(range(n_chunks)).filter(lambda p: list(p) != sorted(p)))
    shuffled = blob[:HEADER_SIZE] + b"".join(body[i] for i in perm)
    with pytest.raises(EnvelopeError):
        decrypt_bytes(shuffled, RING)
    dup = blob[:HEADER_SIZE] + body[0] + body[0] + b"".join(body[2:])
    with pytest.raises(EnvelopeError):
        decrypt_bytes(dup, RING)


def test_failed_chunk_yields_no_partial_plaintext() -> None:
    data = POOL[: 4 * CS]
    blob = bytearray(seal(data))
    blob[HEADER_SIZE + 2 * (CS + TAG_SIZE) + 3] ^= 1  # inside chunk 2
    r = EnvelopeReader(io.BytesIO(bytes(blob)), RING)
    assert r.read_range(0, 2 * CS) == data[: 2 * CS]
    with pytest.raises(ChunkAuthenticationError) as exc:
        r.read_range(2 * CS, 2 * CS + 10)
    assert exc.value.index == 2
    got: list[bytes] = []
    with pytest.raises(ChunkAuthenticationError):
        for piece in r.iter_range(CS, 3 * CS):
            got.append(piece)
    assert got == [data[CS : 2 * CS]]


@pytest.mark.parametrize("extra", [1, TAG_SIZE - 1, TAG_SIZE, CS + TAG_SIZE, CS + 2 * TAG_SIZE])
def test_appended_bytes_rejected(extra: int) -> None:
    blob = seal(POOL[: 3 * CS])
    with pytest.raises(EnvelopeError):
        decrypt_bytes(blob + b"\x00" * extra, RING)
    with pytest.raises(EnvelopeError):
        decrypt_bytes(blob + blob[-extra:], RING)


def test_chunks_from_another_file_rejected() -> None:
    a, b = seal(POOL[: 3 * CS]), seal(POOL[: 3 * CS])
    mixed = a[:HEADER_SIZE] + b[HEADER_SIZE:]
    with pytest.raises(EnvelopeError):
        decrypt_bytes(mixed, RING)


def test_wrong_keys_and_file_ids() -> None:
    fid = bytes(16)
    blob = seal(b"evidence", file_id=fid)
    assert decrypt_bytes(blob, RING, expected_file_id=fid) == b"evidence"
    with pytest.raises(FileIdMismatchError):
        decrypt_bytes(blob, RING, expected_file_id=b"\x01" * 16)
    with pytest.raises(KeyUnwrapError):
        decrypt_bytes(blob, MasterKeyring({"mk1": K2}, "mk1"))
    with pytest.raises(UnknownMasterKeyError):
        decrypt_bytes(blob, ONLY_NEW)
    with pytest.raises(EnvelopeFormatError):
        decrypt_bytes(b"NOTANENVELOPE" * 20, RING)
    with pytest.raises(EnvelopeFormatError):
        decrypt_bytes(b"PK\x03\x04", RING)
    with pytest.raises(TruncatedEnvelopeError):
        decrypt_bytes(blob[:40], RING)
    with pytest.raises(ValueError):
        encrypt_bytes(b"x", RING, file_id=b"short")


def test_header_fields_are_all_authenticated() -> None:
    blob = seal(POOL[: 2 * CS])
    for i in range(HEADER_SIZE):
        bad = bytearray(blob)
        bad[i] ^= 0x80
        with pytest.raises(EnvelopeError):
            decrypt_bytes(bytes(bad), RING)


def test_master_key_rotation_rewraps_without_touching_chunks(tmp_path: Path) -> None:
    data = POOL[: 7 * CS + 5]
    path = tmp_path / "rec.venc"
    with EnvelopeWriter(path, RING, chunk_size=CS) as w:
        w.write(data)
    before = path.read_bytes()
    header = rewrap_header(before[:HEADER_SIZE], ROTATED)
    assert len(header) == HEADER_SIZE
    assert EnvelopeHeader.from_bytes(header).master_key_id == "mk2"
    assert decrypt_bytes(header + before[HEADER_SIZE:], ONLY_NEW) == data

    new = rewrap_file(path, ROTATED)
    after = path.read_bytes()
    assert new.master_key_id == "mk2" and new.file_id == w.file_id
    assert after[HEADER_SIZE:] == before[HEADER_SIZE:]
    assert after[:36] == before[:36]  # fixed part (the chunk AD) is unchanged
    with EnvelopeReader(path, ONLY_NEW, expected_file_id=w.file_id) as r:
        assert r.read_all() == data
    with pytest.raises(UnknownMasterKeyError):
        EnvelopeReader(path, RING)
    assert rewrap_file(path, ROTATED) == new  # already current: untouched
    with pytest.raises(UnknownMasterKeyError):
        rewrap_header(before[:HEADER_SIZE], ONLY_NEW)  # old key needed to unwrap


def test_writer_to_path_is_atomic_and_aborts_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "out.venc"
    w = EnvelopeWriter(path, RING, chunk_size=CS)
    w.write(POOL[: 5 * CS])
    assert not path.exists()
    assert len(list(tmp_path.iterdir())) == 1
    info = w.close()
    assert w.close() is info
    assert path.stat().st_size == info.ciphertext_size
    assert [p.name for p in tmp_path.iterdir()] == ["out.venc"]
    with pytest.raises(EnvelopeError):
        w.write(b"more")

    failed = tmp_path / "failed.venc"
    with pytest.raises(RuntimeError), EnvelopeWriter(failed, RING) as w2:
        w2.write(b"partial recording")
        raise RuntimeError("camera died")
    assert not failed.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.venc"]
    with pytest.raises(EnvelopeError):
        w2.close()


def test_aborted_stream_to_file_object_never_decrypts() -> None:
    out = io.BytesIO()
    w = EnvelopeWriter(out, RING, chunk_size=CS)
    w.write(POOL[: 4 * CS])
    w.abort()
    with pytest.raises(EnvelopeError):
        decrypt_bytes(out.getvalue(), RING)


def test_failing_sink_aborts_writer() -> None:
    class Flaky(io.BytesIO):
        fail = False

        def write(self, data: object) -> int:
            if self.fail:
                raise OSError("disk full")
            return super().write(data)  # type: ignore[arg-type]

    # a small write fails in this thread, a big one (>= 256 KiB) in the encrypting worker
    for failing in (POOL[: 3 * CS], POOL):
        sink = Flaky()
        w = EnvelopeWriter(sink, RING, chunk_size=CS)
        w.write(POOL[: 2 * CS])
        sink.fail = True
        with pytest.raises(OSError):
            w.write(failing)
        sink.fail = False
        with pytest.raises(EnvelopeError):
            w.write(b"retry")
        with pytest.raises(EnvelopeError):
            w.close()


def test_read_header_and_keyring_config() -> None:
    blob = seal(b"abc", file_id=b"\x07" * 16)
    h = read_header(io.BytesIO(blob))
    assert (h.file_id, h.chunk_size, h.master_key_id) == (b"\x07" * 16, CS, "mk1")
    for form in (K1, K1.hex(), base64.b64encode(K1).decode(), base64.urlsafe_b64encode(K1)):
        assert MasterKeyring.from_config({"a": form}, "a").get("a") == K1
    for bad in ("short", b"x" * 31, "zz" * 32):
        with pytest.raises(ValueError):
            MasterKeyring.from_config({"a": bad}, "a")
    with pytest.raises(ValueError):
        MasterKeyring({"a": K1}, "b")
    with pytest.raises(ValueError):
        MasterKeyring({"x" * 33: K1}, "x" * 33)
    assert "mk1" in RING and RING.current_id == "mk1"
    assert K1.hex() not in repr(ROTATED)


def test_bench_encrypt_smoke() -> None:
    result = bench_encrypt(0.25)
    assert set(result) >= {"encrypt_mb_per_s", "aesgcm_mb_per_s"}
    assert result["encrypt_mb_per_s"] > 0 and result["aesgcm_mb_per_s"] > 0


def test_big_writes_encrypt_in_a_thread_with_the_same_bytes_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes of >= 256 KiB are encrypted in a worker while the caller's thread hashes;
    the file and its info are byte-identical to small writes, and a buffer reused after
    write() returns does not change them."""
    counter = iter(range(1_000_000))
    monkeypatch.setattr(
        "audit.envelope.secrets.token_bytes", lambda n: bytes([next(counter) % 256]) * n
    )
    data = os.urandom(3 * 1024 * 1024 + 12345)

    def encrypt(piece: int, reuse: bool) -> tuple[bytes, EnvelopeInfo]:
        nonlocal counter
        counter = iter(range(1_000_000))
        out = io.BytesIO()
        writer = EnvelopeWriter(out, RING)
        scratch = bytearray(piece)
        for i in range(0, len(data), piece):
            part = data[i : i + piece]
            if reuse:
                scratch[: len(part)] = part
                writer.write(memoryview(scratch)[: len(part)])
                scratch[:] = bytes(len(scratch))  # reused right away
            else:
                writer.write(part)
        info = writer.close()
        return out.getvalue(), info

    small, small_info = encrypt(4096, False)
    big, big_info = encrypt(1 << 20, True)
    assert big == small and big_info == small_info
    assert big_info.sha256 == hashlib.sha256(data).digest()
    assert decrypt_bytes(big, RING) == data
