"""Full verification from the database and from an export: what each kind of tampering
looks like, a whole-database rewrite caught by the witness, and one contact's proofs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, text, update

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.checkpoints import (
    Checkpointer,
    Witness,
    WitnessRecord,
    create_checkpoint,
    read_witness_file,
    signed_at_line,
    to_us,
)
from audit.keys import KeyRegistry
from audit.log import GENESIS_HASH, iter_events, row_hash
from audit.models import AuditCheckpoint, AuditEvent, AuditHead
from audit.verifier import (
    ExportedEvent,
    clear_tree_cache,
    export_log,
    verify_contact,
    verify_from_database,
    verify_from_export,
)
from tests.audit.conftest import ORIGIN, OTHER, fill
from vbank.db import Database


async def _log_with_checkpoints(db: Database, keys: KeyRegistry) -> None:
    """30 events with checkpoints at 10, 20 and 30, then 5 not yet checkpointed."""
    for start in (0, 10, 20):
        await fill(db, 10, start=start)
        assert await create_checkpoint(db, keys, origin=ORIGIN) is not None
    await fill(db, 5, start=30)


async def _verify(db: Database, keys: KeyRegistry, **kw: object):  # type: ignore[no-untyped-def]
    async with db.sessions() as session:
        return await verify_from_database(session, keys.public_only(), **kw)  # type: ignore[arg-type]


async def test_an_intact_log_verifies(db: Database, keys: KeyRegistry, tmp_path: Path) -> None:
    await _log_with_checkpoints(db, keys)
    report = await _verify(db, keys)
    assert report.ok, report
    assert (report.events, report.checkpoints, report.checkpoint_size) == (35, 3, 30)
    assert report.consistency_proofs == 2 and report.pending == 5
    export = tmp_path / "log.jsonl"
    async with db.sessions() as session:
        assert await export_log(session, export, origin=ORIGIN) == 35
    assert verify_from_export(export, keys.public_only()) == report


async def test_a_plain_edit_names_the_event(db: Database, keys: KeyRegistry) -> None:
    await _log_with_checkpoints(db, keys)
    async with db.transaction() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == 15).values(actor_role="auditor")
        )
    report = await _verify(db, keys)
    assert not report.ok and report.first_bad_seq == 15 and report.events == 14


async def _rehash_from(db: Database, seq: int) -> None:
    """What an attacker with write access does after an edit: recompute every later hash."""
    async with db.transaction() as session:
        rows = [r async for r in iter_events(session)]
        prev = rows[seq - 2].hash if seq > 1 else GENESIS_HASH
        for r in rows[seq - 1 :]:
            new = row_hash(ExportedEvent(*r[:7], prev_hash=prev, format=r.format))
            await session.execute(
                update(AuditEvent).where(AuditEvent.seq == r.seq).values(prev_hash=prev, hash=new)
            )
            prev = new
        await session.execute(update(AuditHead).values(hash=prev))


async def test_an_edit_with_a_recomputed_chain_breaks_the_signed_root(
    db: Database, keys: KeyRegistry
) -> None:
    await _log_with_checkpoints(db, keys)
    async with db.transaction() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == 15).values(payload='{"i":14,"name":"x"}')
        )
    await _rehash_from(db, 15)
    report = await _verify(db, keys)
    assert not report.ok
    assert report.first_bad_seq == 11 and report.bad_checkpoint == 20, report
    assert "events 11..20" in report.reason


async def test_truncation_below_a_checkpoint_is_found_even_with_the_head_rewound(
    db: Database, keys: KeyRegistry
) -> None:
    await _log_with_checkpoints(db, keys)
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM audit_events WHERE seq > 25"))
        last = (await session.execute(select(AuditEvent.hash).where(AuditEvent.seq == 25))).scalar()
        await session.execute(update(AuditHead).values(seq=25, hash=last))
    report = await _verify(db, keys)
    assert not report.ok and report.first_bad_seq == 26 and report.bad_checkpoint == 30
    assert report.reason == "log ends at event 25, signed checkpoint says 30"


async def test_a_tampered_checkpoint_is_named(db: Database, keys: KeyRegistry) -> None:
    await _log_with_checkpoints(db, keys)
    async with db.sessions() as session:
        note = (
            await session.execute(select(AuditCheckpoint.note).where(AuditCheckpoint.size == 20))
        ).scalar_one()
    lines = note.split("\n")
    lines[2] = lines[2][:5] + ("A" if lines[2][5] != "A" else "B") + lines[2][6:]
    async with db.transaction() as session:
        await session.execute(
            update(AuditCheckpoint).where(AuditCheckpoint.size == 20).values(note="\n".join(lines))
        )
    report = await _verify(db, keys)
    assert not report.ok and report.bad_checkpoint == 20 and "checkpoint 20" in report.reason


async def test_a_whole_database_rewrite_is_caught_by_the_witness(
    db: Database, keys: KeyRegistry, tmp_path: Path
) -> None:
    """The attacker holds the signing key too: only the witness copy shows the rewrite."""
    witness_file = tmp_path / "witness.jsonl"
    cp = Checkpointer(db, keys, origin=ORIGIN, witness=Witness(file=witness_file))
    for start in (0, 10):
        await fill(db, 10, start=start)
        await cp.checkpoint_now()
    # rewrite: different history, re-signed with the stolen key
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM audit_checkpoints"))
        await session.execute(text("DELETE FROM audit_events"))
        await session.execute(update(AuditHead).values(seq=0, hash=GENESIS_HASH))
    await fill(db, 5, start=100)
    await fill(db, 15, start=5)
    await create_checkpoint(db, keys, origin=ORIGIN)
    assert (await _verify(db, keys)).ok  # the database alone is consistent
    report = await _verify(db, keys, witness=read_witness_file(witness_file))
    assert not report.ok and report.bad_checkpoint == 10 and report.first_bad_seq == 1
    assert "witness checkpoint of size 10" in report.reason
    # deleting the newest events and checkpoints is a truncation the witness still shows
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM audit_checkpoints"))
        await session.execute(text("DELETE FROM audit_events"))
        await session.execute(update(AuditHead).values(seq=0, hash=GENESIS_HASH))
    report = await _verify(db, keys, witness=read_witness_file(witness_file))
    assert not report.ok and report.first_bad_seq == 1 and "witness" in report.reason


async def test_a_forged_witness_record_is_refused(
    db: Database, keys: KeyRegistry, tmp_path: Path
) -> None:
    await fill(db, 4)
    row = await create_checkpoint(db, keys, origin=ORIGIN)
    assert row is not None
    now = datetime.now(UTC)
    body = Checkpoint(ORIGIN, 4, bytes.fromhex(row.root), (signed_at_line(to_us(now)),))
    forged = sign_checkpoint(body, KeyRegistry([OTHER]), at=now)
    report = await _verify(db, keys, witness=[WitnessRecord(forged, to_us(now))])
    assert not report.ok and "witness checkpoint 4" in report.reason


async def test_verify_contact_proves_each_event(db: Database, keys: KeyRegistry) -> None:
    public = keys.public_only()
    await fill(db, 6, contact="alpha")
    async with db.sessions() as session:
        report = await verify_contact(session, "alpha", keys=public)
    assert report.ok and report.status == "pending" and report.pending == 6
    assert report.checkpoint_size is None
    await fill(db, 6, contact="beta")
    await create_checkpoint(db, keys, origin=ORIGIN)
    await fill(db, 2, contact="alpha", start=6)
    async with db.sessions() as session:
        report = await verify_contact(session, "alpha", keys=public)
        beta = await verify_contact(session, "beta", keys=public)
    assert report.ok and report.status == "pending" and report.verified == 6
    assert report.pending == 2 and report.checkpoint_size == 12
    assert report.signers == (f"vbank-audit+{next(iter(public)).key_id:08x}",)
    assert beta.ok and beta.status == "verified" and beta.verified == 6
    assert beta.to_json()["signed_at"]
    # an edited event with a recomputed hash fails its inclusion proof
    async with db.transaction() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == 9).values(payload='{"i":2,"name":"?"}')
        )
    await _rehash_from(db, 9)
    async with db.sessions() as session:
        beta = await verify_contact(session, "beta", keys=public)
        alpha = await verify_contact(session, "alpha", keys=public)
    assert not beta.ok and beta.status == "failed" and beta.first_bad_seq == 9, beta
    assert alpha.ok  # alpha's own events are all still proven
    # unknown keys: the checkpoint cannot be trusted
    async with db.sessions() as session:
        other = await verify_contact(session, "alpha", keys=KeyRegistry([OTHER.public]))
    assert not other.ok and "checkpoint 12" in other.reason


async def test_verify_contact_without_the_tree_cache_sees_a_rewritten_log(
    db: Database, keys: KeyRegistry
) -> None:
    await fill(db, 4, contact="gamma")
    await create_checkpoint(db, keys, origin=ORIGIN, at=datetime.now(UTC))
    async with db.transaction() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == 2).values(payload='{"i":9,"name":"?"}')
        )
    await _rehash_from(db, 2)
    clear_tree_cache()  # as a fresh process would
    async with db.sessions() as session:
        report = await verify_contact(session, "gamma", keys=keys)
    assert not report.ok and "does not match signed checkpoint 4" in report.reason
    assert to_us(datetime.now(UTC)) > 0
