"""Retention: delete a closed contact's recordings and snapshots once the period is over.

Why: recordings and identity snapshots are personal data kept only for the legal period
(``VBANK_RETENTION_YEARS``, default 5, counted from the contact's close). The audit log
itself is kept (its events hold hashes and ids, not images), so deleting files never
breaks the chain, and each deletion is itself an audit event (``retention.purged``) in
the contact's trail, written in the same transaction. The customer's on-file reference
photo is not part of a contact and is not touched.

Entry point: ``await purge_expired(db, settings, *, now=None, dry_run=False)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from audit.log import append
from audit.verifier import contact_events
from vbank.config import Settings
from vbank.contact.models import Contact
from vbank.db import Database

logger = logging.getLogger(__name__)

CONTACT_EVIDENCE_KINDS = ("document", "snapshot")
EVIDENCE_FIELDS = ("evidence", "reference_evidence", "live_evidence")


@dataclass(frozen=True)
class Purged:
    """What was (or, in a dry run, would be) deleted for one contact."""

    contact_id: str
    files: tuple[str, ...]
    failed: tuple[str, ...] = ()


def cutoff(now: datetime, years: int) -> datetime:
    """``now`` minus ``years`` calendar years (29 February becomes 28 February)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


def _contact_files(data_dir: Path, contact_id: str, payloads: list[object]) -> list[Path]:
    """Files on disk that belong to the contact: its recordings and its snapshots."""
    files: list[Path] = []
    rec_dir = data_dir / "recordings" / contact_id
    if rec_dir.is_dir():
        files += sorted(p for p in rec_dir.rglob("*") if p.is_file())
    for payload in payloads:
        if not isinstance(payload, dict):
            continue
        for field in EVIDENCE_FIELDS:
            key = payload.get(field)
            if not isinstance(key, str) or "/" not in key:
                continue
            kind, _, file_id = key.partition("/")
            if kind in CONTACT_EVIDENCE_KINDS and file_id.isalnum():
                path = data_dir / "evidence" / kind / f"{file_id}.venv"
                if path.is_file() and path not in files:
                    files.append(path)
    return files


def _delete(paths: list[Path], data_dir: Path, contact_id: str) -> tuple[list[str], list[str]]:
    done: list[str] = []
    failed: list[str] = []
    for path in paths:
        rel = path.relative_to(data_dir).as_posix()
        try:
            path.unlink()
            done.append(rel)
        except OSError:
            failed.append(rel)
    rec_dir = data_dir / "recordings" / contact_id
    if rec_dir.is_dir():  # drop the contact's now empty directories
        for d in sorted((d for d in rec_dir.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            rec_dir.rmdir()
    return done, failed


async def purge_expired(
    db: Database, settings: Settings, *, now: datetime | None = None, dry_run: bool = False
) -> list[Purged]:
    """Delete files of contacts closed before the retention cut-off; one event each."""
    now = now or datetime.now(UTC)
    limit = cutoff(now, settings.retention_years)
    async with db.sessions() as session:
        rows = (
            await session.execute(
                select(Contact.id, Contact.closed_at)
                .where(Contact.state == "closed", Contact.closed_at < limit)
                .order_by(Contact.closed_at)
            )
        ).all()
    results: list[Purged] = []
    for contact_id, closed_at in rows:
        async with db.sessions() as session:
            events = await contact_events(session, contact_id)
        payloads: list[object] = []
        for ev in events:
            try:
                payloads.append(json.loads(ev.payload))
            except ValueError:
                continue
        paths = _contact_files(settings.data_dir, contact_id, payloads)
        if not paths:
            continue
        if dry_run:
            rels = tuple(p.relative_to(settings.data_dir).as_posix() for p in paths)
            results.append(Purged(contact_id, rels))
            continue
        async with db.transaction() as session:
            done, failed = await asyncio.to_thread(_delete, paths, settings.data_dir, contact_id)
            await append(
                session,
                "retention.purged",
                {
                    "retention_years": settings.retention_years,
                    "closed_at": closed_at.isoformat() if closed_at else None,
                    "deleted": done,
                    "failed": failed,
                },
                session_ref=contact_id,
            )
        results.append(Purged(contact_id, tuple(done), tuple(failed)))
        logger.info("retention: deleted %d file(s) of an expired contact", len(done))
    return results
