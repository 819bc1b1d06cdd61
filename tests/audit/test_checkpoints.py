"""Signed checkpoints of the stored log: roots, resumption, the background task, witnesses
and key rotation."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select, text, update

from audit.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from audit.checkpoints import (
    Checkpointer,
    CheckpointRefused,
    Witness,
    create_checkpoint,
    from_us,
    load_checkpoints,
    read_witness_file,
    signed_at_line,
)
from audit.keys import KeyRegistry
from audit.log import iter_events, row_bytes
from audit.merkle import MerkleTree, leaf_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.verifier import verify_from_database
from tests.audit.conftest import KEY_A, KEY_B, ORIGIN, T0, T1, T2, fill
from vbank.db import Database


async def _tree(db: Database) -> MerkleTree:
    async with db.sessions() as session:
        return MerkleTree([leaf_hash(row_bytes(r)) async for r in iter_events(session)])


async def test_checkpoint_signs_the_rfc6962_root_and_resumes(
    db: Database, keys: KeyRegistry
) -> None:
    assert await create_checkpoint(db, keys, origin=ORIGIN) is None  # empty log
    await fill(db, 10)
    first = await create_checkpoint(db, keys, origin=ORIGIN)
    assert first is not None and first.size == 10
    assert await create_checkpoint(db, keys, origin=ORIGIN) is None  # nothing new
    await fill(db, 7, start=10)
    second = await create_checkpoint(db, keys, origin=ORIGIN)
    assert second is not None and second.size == 17
    tree = await _tree(db)
    for row in (first, second):
        vc = verify_checkpoint(row.note, keys.public_only(), at=from_us(row.signed_at_us))
        assert vc.checkpoint == Checkpoint(
            ORIGIN, row.size, tree.root(row.size), (signed_at_line(row.signed_at_us),)
        )
        assert row.root == tree.root(row.size).hex()


async def test_a_bad_resume_state_is_rebuilt_from_the_log(db: Database, keys: KeyRegistry) -> None:
    await fill(db, 5)
    await create_checkpoint(db, keys, origin=ORIGIN)
    async with db.transaction() as session:
        await session.execute(update(AuditCheckpoint).values(frontier="00" * 32))
    await fill(db, 4, start=5)
    row = await create_checkpoint(db, keys, origin=ORIGIN)
    assert row is not None and row.root == (await _tree(db)).root().hex()


async def test_no_checkpoint_is_signed_over_a_broken_chain(db: Database, keys: KeyRegistry) -> None:
    await fill(db, 5)
    await create_checkpoint(db, keys, origin=ORIGIN)
    await fill(db, 5, start=5)
    async with db.transaction() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.seq == 7).values(payload='{"i":70}')
        )
    with pytest.raises(CheckpointRefused) as err:
        await create_checkpoint(db, keys, origin=ORIGIN)
    assert err.value.seq == 7
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM audit_events WHERE seq = 8"))
    with pytest.raises(CheckpointRefused) as err:
        await create_checkpoint(db, keys, origin=ORIGIN)
    assert err.value.seq == 7


async def _sizes(db: Database) -> list[int]:
    async with db.sessions() as session:
        return [r.size for r in await load_checkpoints(session)]


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_checkpointer_every_n_events_and_at_shutdown(
    db: Database, keys: KeyRegistry, tmp_path: Path
) -> None:
    witness_file = tmp_path / "witness" / "checkpoints.jsonl"
    cp = Checkpointer(
        db,
        keys,
        origin=ORIGIN,
        every_events=5,
        interval_s=3600,
        poll_s=0.02,
        witness=Witness(file=witness_file),
    )
    await cp.start()
    try:
        await fill(db, 3)
        await asyncio.sleep(0.3)
        assert await _sizes(db) == []  # fewer than N events and the interval is long
        await fill(db, 3, start=3)

        async def six() -> bool:
            return await _sizes(db) == [6]

        await _until(six)
        await fill(db, 1, start=6)
    finally:
        await cp.stop()
    assert await _sizes(db) == [6, 7]  # the shutdown checkpoint
    records = read_witness_file(witness_file)
    assert [json.loads(line)["size"] for line in witness_file.read_text().splitlines()] == [6, 7]
    async with db.sessions() as session:
        rows = await load_checkpoints(session)
        assert all(r.published for r in rows)
        report = await verify_from_database(session, keys.public_only(), witness=records)
    assert report.ok and report.witnessed == 2 and report.checkpoint_size == 7, report


async def test_checkpointer_after_the_interval(db: Database, keys: KeyRegistry) -> None:
    cp = Checkpointer(db, keys, origin=ORIGIN, every_events=1000, interval_s=0.3, poll_s=0.02)
    await cp.start()
    try:
        await asyncio.sleep(0.5)
        assert await _sizes(db) == []  # no events, no checkpoint
        await fill(db, 2)

        async def two() -> bool:
            return await _sizes(db) == [2]

        await _until(two)
    finally:
        await cp.stop()
    assert await _sizes(db) == [2]  # nothing new at shutdown


async def test_witness_url_gets_each_checkpoint_and_failures_are_retried(
    db: Database, keys: KeyRegistry, aiohttp_server: Any
) -> None:
    got: list[dict[str, Any]] = []
    fail = {"now": True}

    async def take(request: web.Request) -> web.Response:
        if fail["now"]:
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/witness", take)
    server = await aiohttp_server(app)
    cp = Checkpointer(
        db, keys, origin=ORIGIN, witness=Witness(url=str(server.make_url("/witness")))
    )
    await fill(db, 3)
    await cp.checkpoint_now()
    assert got == []
    async with db.sessions() as session:
        assert [r.published for r in await load_checkpoints(session)] == [False]
    fail["now"] = False
    await fill(db, 2, start=3)
    await cp.checkpoint_now()
    assert [r["size"] for r in got] == [3, 5]
    assert got[0]["origin"] == ORIGIN and got[0]["note"].startswith(f"{ORIGIN}\n3\n")
    async with db.sessions() as session:
        assert [r.published for r in await load_checkpoints(session)] == [True, True]


async def test_key_rotation_signs_with_both_and_keeps_old_checkpoints_verifiable(
    db: Database,
) -> None:
    private = KeyRegistry([KEY_A, KEY_B])
    public = private.public_only()
    signers = []
    for at in (T0 + timedelta(days=1), T1 + timedelta(days=1), T2 + timedelta(days=1)):
        await fill(db, 4)
        row = await create_checkpoint(db, private, origin=ORIGIN, at=at)
        assert row is not None
        vc = verify_checkpoint(row.note, public, at=at)
        signers.append(sorted(k.key_id for k in vc.signers))
    a, b = KEY_A.key_id, KEY_B.key_id
    assert signers == [[a], sorted([a, b]), [b]]  # old only, both in the overlap, new only
    async with db.sessions() as session:
        assert (await verify_from_database(session, public)).ok
        # an auditor who only has the new key cannot vouch for the old checkpoints
        report = await verify_from_database(session, KeyRegistry([KEY_B.public]))
        assert not report.ok and report.bad_checkpoint == 4
    # a signing time moved outside the old key's window is refused
    async with db.transaction() as session:
        await session.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.size == 4)
            .values(
                signed_at_us=(
                    await session.execute(
                        select(AuditCheckpoint.signed_at_us).where(AuditCheckpoint.size == 12)
                    )
                ).scalar_one()
            )
        )
    async with db.sessions() as session:
        report = await verify_from_database(session, public)
    assert not report.ok and report.bad_checkpoint == 4 and "valid at" in report.reason


async def test_no_valid_key_means_no_checkpoint(db: Database) -> None:
    await fill(db, 2)
    with pytest.raises(CheckpointError, match="no checkpoint signing key"):
        await create_checkpoint(db, KeyRegistry([KEY_A]), origin=ORIGIN, at=T2 + timedelta(days=1))


async def test_the_app_checkpoints_at_shutdown_and_installs_its_keys(
    aiohttp_client: Any, settings: Any, db: Database
) -> None:
    from audit import signing
    from audit.verifier import verify_contact
    from vbank.app import CHECKPOINTER, create_app

    app = create_app(settings)
    client = await aiohttp_client(app)
    assert app[CHECKPOINTER].every_events == settings.checkpoint_events
    await fill(db, 3, contact="shut")
    assert signing.installed_registry() is app[CHECKPOINTER].keys
    await client.close()  # shutdown: a last checkpoint of what is new
    assert await _sizes(db) == [3]
    async with db.sessions() as session:
        report = await verify_contact(session, "shut")  # the installed registry
    assert report.ok and report.status == "verified" and report.verified == 3
