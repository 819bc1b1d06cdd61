"""`vbank bench audit`: durable appends, chain verification and envelope encryption, each
against its raw primitive measured in the same run (hashlib, AES-GCM)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from audit.envelope import bench_encrypt
from audit.log import NewEvent, append_many, iter_events, row_bytes, verify_chain
from audit.models import AuditEvent, AuditHead
from vbank.db import Database, is_sqlite
from vbank.migrate import upgrade

BATCH = 200


async def _appends(db: Database, events: int) -> float:
    payload = {"contact": "0" * 32, "seq": 0, "sha256": "f" * 64}
    t0 = time.perf_counter()
    done = 0
    while done < events:
        n = min(BATCH, events - done)
        batch = [NewEvent("bench.event", {**payload, "seq": done + i}) for i in range(n)]
        async with db.transaction() as session:  # one durable commit per batch
            await append_many(session, batch)
        done += n
    return events / (time.perf_counter() - t0)


async def _verify(db: Database) -> tuple[float, float, int]:
    async with db.sessions() as session:
        rows = [r async for r in iter_events(session)]
    t0 = time.perf_counter()
    report = verify_chain(rows)
    verify_s = time.perf_counter() - t0
    assert report.ok, report
    bodies = [row_bytes(r) for r in rows]
    prev = bytes(32)
    t0 = time.perf_counter()
    for body in bodies:
        prev = hashlib.sha256(prev + body).digest()
    raw_s = time.perf_counter() - t0
    return len(rows) / verify_s, len(rows) / raw_s, len(rows)


async def _run(url: str, events: int) -> dict[str, Any]:
    upgrade(url)
    db = Database(url)
    try:
        if not is_sqlite(url):  # a shared server: start from an empty log
            async with db.transaction() as session:
                await session.execute(delete(AuditEvent))
                head = await session.get(AuditHead, 1)
                assert head is not None
                head.seq, head.hash = 0, "0" * 64
        append_per_s = await _appends(db, events)
        verify_per_s, hashlib_per_s, count = await _verify(db)
    finally:
        await db.close()
    return {
        "events": count,
        "database": "sqlite" if is_sqlite(url) else "postgresql",
        "batch": BATCH,
        "append_per_s": round(append_per_s),
        "verify_per_s": round(verify_per_s),
        "hashlib_per_s": round(hashlib_per_s),
        "verify_ratio": round(verify_per_s / hashlib_per_s, 3),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        result = asyncio.run(_run(url, args.events))
    enc = bench_encrypt(64.0)
    result.update(
        encrypt_mb_per_s=round(enc["encrypt_mb_per_s"]),
        aesgcm_mb_per_s=round(enc["aesgcm_mb_per_s"]),
        encrypt_ratio=round(enc["encrypt_mb_per_s"] / enc["aesgcm_mb_per_s"], 3),
        aesgcm_sha256_mb_per_s=round(enc.get("aesgcm_sha256_mb_per_s", 0)),
    )
    return result
