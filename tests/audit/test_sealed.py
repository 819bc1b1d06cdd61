"""Recordings sealed at rest: wrong key, wrong file id and damaged or cut ciphertext are
refused (a flipped byte names its chunk), and master-key rotation re-wraps data keys only."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from audit.envelope import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    ChunkAuthenticationError,
    EnvelopeError,
    FileIdMismatchError,
    KeyUnwrapError,
    MasterKeyring,
    TruncatedEnvelopeError,
    UnknownMasterKeyError,
)
from audit.models import AuditEvent
from audit.sealed import rewrap_all, seal_file, unseal_to
from vbank.cli import main
from vbank.config import Settings
from vbank.db import Database
from vbank.evidence import EvidenceStore

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(1, 33)))
RING1 = MasterKeyring(dict([K1]), "k1")
PLAIN = os.urandom(2 * DEFAULT_CHUNK_SIZE + 5000)  # three chunks, the last one short
EXAMPLES = max(150, int(os.environ.get("VBANK_PROP_EXAMPLES", "0")))


@pytest.fixture
def sealed(tmp_path: Path) -> tuple[Path, bytes]:
    plain = tmp_path / "rec" / "customer.mkv"
    plain.parent.mkdir()
    plain.write_bytes(PLAIN)
    result = seal_file(plain, RING1, tmp_dir=tmp_path / ".sealing")
    assert not plain.exists() and result.path.name == "customer.mkv.venv"
    assert result.sha256 == hashlib.sha256(PLAIN).hexdigest() and result.size == len(PLAIN)
    assert list((tmp_path / ".sealing").iterdir()) == []
    return result.path, result.file_id


def test_a_sealed_recording_opens_only_with_its_key_and_id(
    sealed: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, file_id = sealed
    out = tmp_path / "out.mkv"
    assert unseal_to(path, RING1, file_id, out) == (hashlib.sha256(PLAIN).hexdigest(), len(PLAIN))
    assert out.read_bytes() == PLAIN
    wrong_bytes = MasterKeyring({"k1": bytes(32)}, "k1")
    for ring, file, error in (
        (wrong_bytes, file_id, KeyUnwrapError),
        (MasterKeyring(dict([K2]), "k2"), file_id, UnknownMasterKeyError),
        (RING1, os.urandom(16), FileIdMismatchError),
    ):
        with pytest.raises(error):
            unseal_to(path, ring, file, tmp_path / "refused.mkv")
        assert not (tmp_path / "refused.mkv").exists()
    data = path.read_bytes()
    stride = DEFAULT_CHUNK_SIZE + TAG_SIZE
    path.write_bytes(data[: HEADER_SIZE + 2 * stride])  # cut at a chunk boundary
    with pytest.raises(TruncatedEnvelopeError):
        unseal_to(path, RING1, file_id, tmp_path / "cut.mkv")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_edit_or_cut_of_a_sealed_recording_is_refused(
    sealed: tuple[Path, bytes], tmp_path: Path, data: st.DataObject
) -> None:
    path, file_id = sealed
    original = path.read_bytes()
    try:
        if data.draw(st.booleans(), "cut"):
            path.write_bytes(original[: data.draw(st.integers(0, len(original) - 1), "cut at")])
            chunk = None
        else:
            pos = data.draw(st.integers(0, len(original) - 1), "position")
            new = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]), "byte")
            path.write_bytes(original[:pos] + bytes([new]) + original[pos + 1 :])
            chunk = (pos - HEADER_SIZE) // (DEFAULT_CHUNK_SIZE + TAG_SIZE)
            chunk = chunk if pos >= HEADER_SIZE else None
        with pytest.raises(EnvelopeError) as err:
            unseal_to(path, RING1, file_id, tmp_path / "x.mkv")
        assert not (tmp_path / "x.mkv").exists()
        if chunk is not None and isinstance(err.value, ChunkAuthenticationError):
            assert err.value.index == chunk  # located
    finally:
        path.write_bytes(original)


async def test_master_key_rotation_rewraps_data_keys_only(
    sealed: tuple[Path, bytes],
    settings: Settings,
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, file_id = sealed
    rec_dir = settings.data_dir / "recordings" / "c1"
    rec_dir.mkdir(parents=True)
    moved = rec_dir / path.name
    path.rename(moved)
    store = EvidenceStore(settings.data_dir / "evidence", RING1)
    key = store.put(b"snapshot bytes", kind="snapshot")
    body_before = moved.read_bytes()[HEADER_SIZE:]
    ring2 = MasterKeyring(dict([K2, K1]), "k2")
    report = rewrap_all(settings.data_dir, ring2)
    assert (report.rewrapped, report.current, report.failed) == (2, 0, ())
    assert moved.read_bytes()[HEADER_SIZE:] == body_before  # chunks untouched
    only_new = MasterKeyring(dict([K2]), "k2")
    assert unseal_to(moved, only_new, file_id, tmp_path / "o.mkv")[1] == len(PLAIN)
    assert EvidenceStore(settings.data_dir / "evidence", only_new).get(key) == b"snapshot bytes"
    with pytest.raises(UnknownMasterKeyError):
        unseal_to(moved, RING1, file_id, tmp_path / "p.mkv")
    assert rewrap_all(settings.data_dir, ring2).current == 2  # idempotent

    # the command, with the new key first in the configuration: an audit event records it
    import base64

    def b64(k: bytes) -> str:
        return base64.b64encode(k).decode()

    monkeypatch.setenv("VBANK_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("VBANK_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VBANK_MASTER_KEY", f"k3:{b64(bytes(range(2, 34)))},k2:{b64(K2[1])}")
    assert await asyncio.to_thread(main, ["audit", "rotate-master-key"]) == 0
    assert '"rewrapped": 2' in capsys.readouterr().out
    async with db.sessions() as session:
        event = (
            await session.execute(
                select(AuditEvent.payload).where(AuditEvent.type == "keys.master_rewrapped")
            )
        ).scalar_one()
    assert '"master_key_id":"k3"' in event and '"rewrapped":2' in event
