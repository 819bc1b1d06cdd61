"""Event hash formats: logs written before format 2 keep verifying (database, export,
bundle), new events are format 2 (one hash is the link and the Merkle leaf), a log
can hold old events then new ones, and a changed format marker shows like any other edit.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, update

from audit.bundle import _sig_text, export_bundle, verify_bundle
from audit.checkpoint import sign_note
from audit.checkpoints import create_checkpoint, from_us
from audit.keys import KeyRegistry
from audit.log import FORMAT_CHAINED, FORMAT_LEAF, hash_and_leaf, iter_events, row_bytes
from audit.models import AuditEvent, AuditHead
from audit.signing import registry_from_settings
from audit.verifier import (
    ExportedEvent,
    VerifyReport,
    clear_tree_cache,
    export_lines,
    export_log,
    stored_tree,
    verify_contact,
    verify_export_lines,
    verify_from_database,
    verify_from_export,
)
from tests.audit.conftest import ORIGIN, fill, make_events
from tests.audit.test_bundle import _members, _zip
from vbank.config import Settings
from vbank.db import Database
from vbank.migrate import alembic_config, upgrade


async def _verify(db: Database, keys: KeyRegistry) -> VerifyReport:
    async with db.sessions() as session:
        return await verify_from_database(session, keys.public_only())


async def _formats(db: Database) -> list[int]:
    async with db.sessions() as session:
        return list(
            (await session.execute(select(AuditEvent.format).order_by(AuditEvent.seq))).scalars()
        )


async def _mixed_log(db: Database, keys: KeyRegistry) -> None:
    """Events 1..10 by the format-1 appender, 11..20 by today's; checkpoints at 8 and 20."""
    await fill(db, 8, chained=True)
    await create_checkpoint(db, keys, origin=ORIGIN)
    await fill(db, 2, start=8, chained=True)
    await fill(db, 10, start=10)
    await create_checkpoint(db, keys, origin=ORIGIN)


async def _set_format(db: Database, seq: int, value: int) -> None:
    async with db.transaction() as session:
        await session.execute(update(AuditEvent).where(AuditEvent.seq == seq).values(format=value))


async def test_new_events_are_format_2_and_their_hash_is_their_leaf(
    db: Database, keys: KeyRegistry
) -> None:
    await fill(db, 5)
    async with db.sessions() as session:
        rows = [r async for r in iter_events(session)]
        tree = await stored_tree(session, 5)
    assert [r.format for r in rows] == [FORMAT_LEAF] * 5
    for r in rows:
        body = row_bytes(r)
        assert json.loads(body)["prev"] == r.prev_hash and json.loads(body)["format"] == 2
        assert hashlib.sha256(b"\x00" + body).hexdigest() == r.hash
        assert tree.leaf_hash(r.seq - 1).hex() == r.hash
    assert (await _verify(db, keys)).ok


async def test_a_log_from_before_the_migration_verifies_and_grows_in_format_2(
    database_url: str, keys: KeyRegistry, tmp_path: Path
) -> None:
    command.downgrade(alembic_config(database_url), "0008")  # no format column yet
    old = Database(database_url)
    try:
        await fill(old, 6, chained=True)  # what the appender wrote before the change
    finally:
        await old.close()
    upgrade(database_url)
    db = Database(database_url)
    try:
        assert await _formats(db) == [FORMAT_CHAINED] * 6  # the column's server default
        assert (await _verify(db, keys)).ok
        await create_checkpoint(db, keys, origin=ORIGIN)
        await fill(db, 6, start=6)
        await create_checkpoint(db, keys, origin=ORIGIN)
        assert await _formats(db) == [FORMAT_CHAINED] * 6 + [FORMAT_LEAF] * 6
        report = await _verify(db, keys)
        assert report.ok and report.events == 12 and report.consistency_proofs == 1, report
        export = tmp_path / "log.jsonl"
        async with db.sessions() as session:
            await export_log(session, export, origin=ORIGIN)
            contact = await verify_contact(session, "c0", keys=keys.public_only())
        assert verify_from_export(export, keys.public_only()) == report
        assert contact.ok and contact.status == "verified" and contact.verified == 6, contact
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("seq", "value", "reason"),
    [
        (15, FORMAT_CHAINED, "event content does not match its hash"),  # new event as old
        (5, FORMAT_LEAF, "event content does not match its hash"),  # old event as new
        (10, FORMAT_LEAF, "event content does not match its hash"),  # at the boundary
        (11, FORMAT_CHAINED, "event content does not match its hash"),
        (12, 3, "event has an unknown hash format 3"),
    ],
)
async def test_a_flipped_format_marker_is_located(
    db: Database, keys: KeyRegistry, seq: int, value: int, reason: str
) -> None:
    await _mixed_log(db, keys)
    assert (await _verify(db, keys)).ok
    await _set_format(db, seq, value)
    report = await _verify(db, keys)
    assert not report.ok and report.first_bad_seq == seq and report.reason == reason, report


async def test_a_flipped_marker_with_a_recomputed_hash_breaks_the_signed_root(
    db: Database, keys: KeyRegistry
) -> None:
    """An attacker who re-hashes event 15 the old way (and the chain after it) keeps the
    chain intact, but the event's bytes, and so its leaf, changed: checkpoint 20 says so."""
    await _mixed_log(db, keys)
    async with db.transaction() as session:
        rows = [r async for r in iter_events(session)]
        prev = rows[13].hash
        for r in rows[14:]:
            fmt = FORMAT_CHAINED if r.seq == 15 else r.format
            ev = ExportedEvent(*r[:7], prev_hash=prev, format=fmt)
            new = hash_and_leaf(fmt, prev, row_bytes(ev))[0]
            await session.execute(
                update(AuditEvent)
                .where(AuditEvent.seq == r.seq)
                .values(prev_hash=prev, hash=new, format=fmt)
            )
            prev = new
        await session.execute(update(AuditHead).values(hash=prev))
    clear_tree_cache()
    report = await _verify(db, keys)
    assert not report.ok and report.first_bad_seq == 9 and report.bad_checkpoint == 20, report


def _export(chained: int) -> list[bytes]:
    events = make_events(12, chained=chained)
    lines = export_lines(events, [], (12, events[-1].hash), origin=ORIGIN, event_count=12)
    return [line.encode() for line in lines]


def _verify_lines(lines: list[bytes], keys: KeyRegistry) -> VerifyReport:
    return verify_export_lines(lambda: lines, keys.public_only())


@pytest.mark.parametrize("chained", [0, 5, 12])
def test_exports_of_each_kind_of_log_verify(chained: int, keys: KeyRegistry) -> None:
    lines = _export(chained)
    assert (b'"format":1' in lines[1]) == (chained > 0)
    report = _verify_lines(lines, keys)
    assert report.ok and report.events == 12, report


def test_an_export_written_before_the_format_member_verifies(keys: KeyRegistry) -> None:
    lines = [line.replace(b',"format":1', b"") for line in _export(12)]
    assert not any(b'"format"' in line for line in lines[1:])
    assert _verify_lines(lines, keys).ok


@pytest.mark.parametrize(
    ("line", "old", "new"),
    [
        (7, b'"format":2', b'"format":1'),
        (3, b'"format":1', b'"format":2'),
        (7, b',"format":2', b""),  # a format-2 event without its marker reads as format 1
        (3, b'"format":1', b'"formaT":1'),  # a renamed marker is not an absent one
        (3, b'"format":1', b'"format":7'),
    ],
)
def test_a_changed_marker_in_an_export_is_located(
    keys: KeyRegistry, line: int, old: bytes, new: bytes
) -> None:
    lines = _export(5)
    assert old in lines[line]
    lines[line] = lines[line].replace(old, new)
    report = _verify_lines(lines, keys)
    assert not report.ok and report.first_bad_seq == line, report


# ---------------------------------------------------------------------------- bundles


async def _mixed_contact_bundle(db: Database, settings: Settings) -> bytes:
    await fill(db, 3, contact="mixed", chained=True)
    await create_checkpoint(db, registry_from_settings(settings), origin=settings.audit_origin)
    await fill(db, 2, chained=True)
    await fill(db, 3, contact="mixed", start=3)
    out = io.BytesIO()
    info = await export_bundle(db, "mixed", out, settings)
    assert info.events == 6
    return out.getvalue()


def _rewrite(blob: bytes, settings: Settings, edit: bytes, into: bytes) -> io.BytesIO:
    """The bundle with events.jsonl edited and its manifest re-signed by the bank."""
    members = _members(blob)
    events = members["events.jsonl"].replace(edit, into)
    manifest = json.loads(members["manifest.json"])
    manifest["files"]["events.jsonl"] = {
        "sha256": hashlib.sha256(events).hexdigest(),
        "bytes": len(events),
    }
    body = (json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n").encode()
    signers = registry_from_settings(settings).signers_at(from_us(manifest["created_at_us"]))
    members |= {
        "events.jsonl": events,
        "manifest.json": body,
        "manifest.sig": sign_note(
            _sig_text("mixed", hashlib.sha256(body).hexdigest()), signers
        ).encode(),
    }
    return _zip(members)


async def test_a_bundle_from_a_mixed_log_verifies_offline(db: Database, settings: Settings) -> None:
    blob = await _mixed_contact_bundle(db, settings)
    public = registry_from_settings(settings).public_only()
    report = verify_bundle(io.BytesIO(blob), public)
    assert report.ok and report.events == 6, report
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        formats = [json.loads(line)["format"] for line in zf.read("events.jsonl").splitlines()]
    assert formats == [1, 1, 1, 2, 2, 2]
    # a bundle written before events carried the marker (same bytes, re-signed) verifies
    old = _rewrite(blob, settings, b',"format":1', b"")
    assert verify_bundle(old, public).ok
    # a flipped marker names the event, even under a valid manifest signature
    flipped = verify_bundle(_rewrite(blob, settings, b'"format":2', b'"format":1'), public)
    assert not flipped.ok and "does not match its hash" in flipped.reason, flipped
    assert flipped.first_bad_seq == 6, flipped
