"""Evidence bundles: export one contact, verify offline with the public key only, and
locate any tampering of its events, recordings or snapshots."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from audit.bundle import BundleError, export_bundle, verify_bundle
from audit.keys import KeyRegistry
from audit.log import Actor, append
from audit.models import AuditEvent
from audit.sealed import seal_file
from audit.signing import registry_from_settings
from audit.verifier import clear_tree_cache
from tests.audit.conftest import OTHER, fill
from vbank.config import Settings
from vbank.db import Database
from vbank.evidence import EvidenceStore, keyring_from_settings

EXAMPLES = max(120, int(os.environ.get("VBANK_PROP_EXAMPLES", "0")))


@dataclass(repr=False)
class Contact:
    id: str
    recording: bytes
    recording_name: str
    recording_seq: int
    document_name: str
    document_seq: int
    bundle: bytes
    public: KeyRegistry

    def __repr__(self) -> str:
        return f"Contact({self.id})"


async def _record(db: Database, cid: str, type_: str, payload: dict[str, object]) -> int:
    async with db.transaction() as session:
        return (await append(session, type_, payload, actor=Actor(2, "agent"), session_ref=cid)).seq


async def make_contact(db: Database, settings: Settings) -> Contact:
    """A contact with chat events, a sealed recording and two snapshots, among others."""
    cid = uuid.uuid4().hex
    await fill(db, 5)
    await _record(db, cid, "contact.queued", {"skill": "accounts"})
    recording = os.urandom(150_000)
    plain = settings.data_dir / "recordings" / cid / "attempt-1" / "customer.mkv"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(recording)
    sealed = seal_file(plain, keyring_from_settings(settings))
    assert not plain.exists()
    rec_seq = await _record(
        db,
        cid,
        "recording.finalised",
        {
            "side": "customer",
            "file": f"{cid}/attempt-1/customer.mkv.venv",
            "file_id": sealed.file_id.hex(),
            "master_key_id": sealed.master_key_id,
            "sha256": hashlib.sha256(recording).hexdigest(),
            "bytes": len(recording),
        },
    )
    await fill(db, 3, start=5)
    store = EvidenceStore.from_settings(settings)
    doc = b"\xff\xd8 a document photo " + os.urandom(500)
    doc_key = store.put(doc, kind="document")
    doc_seq = await _record(
        db,
        cid,
        "verify.document_captured",
        {"evidence": doc_key, "sha256": hashlib.sha256(doc).hexdigest()},
    )
    live = b"\xff\xd8 a live frame"
    live_key = store.put(live, kind="snapshot")
    await _record(
        db,
        cid,
        "verify.attempt_result",
        {
            "reference_evidence": doc_key,
            "live_evidence": live_key,
            "live_sha256": hashlib.sha256(live).hexdigest(),
        },
    )
    out = io.BytesIO()
    info = await export_bundle(db, cid, out, settings, actor=Actor(9, "auditor"))
    assert info.events == 4 and not info.missing
    assert set(info.files) >= {"events.jsonl", "checkpoint.txt", "keys.json"}
    return Contact(
        cid,
        recording,
        f"recordings/{cid}/attempt-1/customer.mkv",
        rec_seq,
        f"evidence/{doc_key}",
        doc_seq,
        out.getvalue(),
        registry_from_settings(settings).public_only(),
    )


@pytest.fixture
async def contact(db: Database, settings: Settings) -> Contact:
    return await make_contact(db, settings)


def _members(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _zip(members: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    out.seek(0)
    return out


async def test_a_bundle_verifies_offline_with_the_public_key(
    contact: Contact, db: Database, settings: Settings, tmp_path: Path
) -> None:
    report = verify_bundle(io.BytesIO(contact.bundle), contact.public)
    assert report.ok, report
    assert report.contact_id == contact.id and report.events == 4
    assert not report.keys_from_bundle and report.signers
    members = _members(contact.bundle)
    assert members[contact.recording_name] == contact.recording  # decrypted, verbatim
    assert any(n.startswith("evidence/snapshot/") for n in members)
    manifest = json.loads(members["manifest.json"])
    assert manifest["checkpoint"]["size"] >= contact.recording_seq
    # the bundle's own keys.json works too, and says so
    assert verify_bundle(io.BytesIO(contact.bundle)).keys_from_bundle
    # someone else's key does not
    wrong = verify_bundle(io.BytesIO(contact.bundle), KeyRegistry([OTHER.public]))
    assert not wrong.ok and wrong.bad_file == "manifest.sig"
    # the export itself was audited, in the contact's own trail
    async with db.sessions() as session:
        types = (
            await session.execute(
                select(AuditEvent.type).where(AuditEvent.session_ref == contact.id)
            )
        ).scalars()
        assert "audit.bundle_exported" in list(types)
    # to a path, with the zip's hash reported
    path = tmp_path / "bundle.zip"
    info = await export_bundle(db, contact.id, path, settings)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify_bundle(path, contact.public).ok


async def test_export_refuses_unknown_contacts_and_tampered_logs(
    contact: Contact, db: Database, settings: Settings
) -> None:
    with pytest.raises(BundleError, match="no audit events"):
        await export_bundle(db, "nobody", io.BytesIO(), settings)
    async with db.transaction() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == 2).values(payload='{"i":5,"name":"x"}')
        )
    clear_tree_cache()  # as a fresh process would
    with pytest.raises(BundleError, match="does not match signed checkpoint"):
        await export_bundle(db, contact.id, io.BytesIO(), settings)


async def test_a_recording_gone_from_disk_is_listed_missing(
    db: Database, settings: Settings
) -> None:
    contact = await make_contact(db, settings)
    for path in (settings.data_dir / "recordings").rglob("*.venv"):
        path.unlink()
    out = io.BytesIO()
    info = await export_bundle(db, contact.id, out, settings)
    assert info.missing == (contact.recording_name,)
    out.seek(0)
    report = verify_bundle(out, contact.public)
    assert report.ok and report.missing == (contact.recording_name,)


@st.composite
def member_mutations(
    draw: st.DrawFn, c: Contact
) -> tuple[str, dict[str, bytes], int | None, str | None]:
    """(kind, members, expected first_bad_seq or None, expected bad_file or None)."""
    members = _members(c.bundle)
    events = members["events.jsonl"].splitlines(keepends=True)
    seqs = [json.loads(line)["seq"] for line in events]
    kind = draw(
        st.sampled_from(
            [
                "event-edit",
                "event-delete",
                "event-swap",
                "event-dup",
                "recording",
                "recording-cut",
                "document",
                "checkpoint",
                "manifest",
                "drop-file",
            ]
        )
    )
    if kind.startswith("event-"):
        original = list(events)
        i = draw(st.integers(0, len(events) - 1))
        if kind == "event-edit":
            pos = draw(st.integers(0, len(events[i]) - 1))
            new = draw(st.integers(0, 255).filter(lambda b: b != events[i][pos]))
            events[i] = events[i][:pos] + bytes([new]) + events[i][pos + 1 :]
        elif kind == "event-delete":
            del events[i]
        elif kind == "event-swap":
            i = min(i, len(events) - 2)
            events[i], events[i + 1] = events[i + 1], events[i]
        else:
            events.insert(draw(st.integers(0, len(events))), events[i])
        members["events.jsonl"] = b"".join(events)
        k = next(
            k
            for k in range(len(events) + 1)
            if k >= len(original) or k >= len(events) or events[k] != original[k]
        )
        return kind, members, seqs[k] if k < len(seqs) else None, None
    if kind in ("recording", "document"):
        name = c.recording_name if kind == "recording" else c.document_name
        data = members[name]
        pos = draw(st.integers(0, len(data) - 1))
        new = draw(st.integers(0, 255).filter(lambda b: b != data[pos]))
        members[name] = data[:pos] + bytes([new]) + data[pos + 1 :]
        return kind, members, c.recording_seq if kind == "recording" else c.document_seq, name
    if kind == "recording-cut":
        data = members[c.recording_name]
        members[c.recording_name] = data[: draw(st.integers(0, len(data) - 1))]
        return kind, members, c.recording_seq, c.recording_name
    if kind == "drop-file":
        del members[c.recording_name]
        return kind, members, None, c.recording_name
    name = "checkpoint.txt" if kind == "checkpoint" else "manifest.json"
    data = members[name]
    pos = draw(st.integers(0, len(data) - 1))
    new = draw(st.integers(0, 255).filter(lambda b: b != data[pos]))
    members[name] = data[:pos] + bytes([new]) + data[pos + 1 :]
    return kind, members, None, name


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_every_bundle_mutation_is_detected_and_located(
    contact: Contact, data: st.DataObject
) -> None:
    kind, members, seq, bad_file = data.draw(member_mutations(contact))
    report = verify_bundle(_zip(members), contact.public)
    assert not report.ok, kind
    if seq is not None:
        assert report.first_bad_seq == seq, (kind, report)
    if bad_file is not None:
        assert report.bad_file == bad_file, (kind, report)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_raw_zip_edits_and_cuts_are_detected(contact: Contact, data: st.DataObject) -> None:
    blob = contact.bundle
    if data.draw(st.booleans(), "cut"):
        mutated = blob[: data.draw(st.integers(0, len(blob) - 1), "offset")]
    else:
        pos = data.draw(st.integers(0, len(blob) - 1), "position")
        new = data.draw(st.integers(0, 255).filter(lambda b: b != blob[pos]), "byte")
        mutated = blob[:pos] + bytes([new]) + blob[pos + 1 :]
    report = verify_bundle(io.BytesIO(mutated), contact.public)
    if report.ok:  # only bytes no reader looks at (zip comments, unused header fields)
        assert _members(mutated) == _members(blob)


async def test_a_live_snapshot_that_does_not_match_its_event_is_refused(
    db: Database, settings: Settings
) -> None:
    """The live snapshot's hash logged in verify.attempt_result is checked offline."""
    cid = "f" * 32
    await _record(db, cid, "contact.queued", {"skill": "accounts"})
    store = EvidenceStore.from_settings(settings)
    live_key = store.put(b"\xff\xd8 what the camera saw", kind="snapshot")
    await _record(
        db,
        cid,
        "verify.attempt_result",
        {"live_evidence": live_key, "live_sha256": hashlib.sha256(b"something else").hexdigest()},
    )
    out = io.BytesIO()
    await export_bundle(db, cid, out, settings)
    out.seek(0)
    report = verify_bundle(out, registry_from_settings(settings).public_only())
    assert not report.ok
    assert "does not match event" in report.reason
