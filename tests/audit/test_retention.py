"""Retention: recordings and snapshots of contacts closed longer ago than the period are
deleted, each deletion is an audit event, and the log and bundles still verify."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from audit.bundle import export_bundle, verify_bundle
from audit.log import Actor, append
from audit.models import AuditEvent
from audit.sealed import seal_file
from audit.signing import registry_from_settings
from audit.verifier import verify_from_database
from tests.conftest import MakeUser
from vbank.config import Settings
from vbank.contact.models import Contact
from vbank.db import Database
from vbank.evidence import EvidenceStore, keyring_from_settings
from vbank.retention import cutoff, purge_expired
from vbank.roles import Role

NOW = datetime(2031, 6, 1, tzinfo=UTC)


async def _contact(
    db: Database, settings: Settings, customer: int, closed_at: datetime | None, ref_key: str
) -> str:
    cid = uuid.uuid4().hex
    plain = settings.data_dir / "recordings" / cid / "attempt-1" / "agent.mkv"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(b"\x1aE\xdf\xa3 a recording")
    sealed = seal_file(plain, keyring_from_settings(settings))
    store = EvidenceStore.from_settings(settings)
    live = store.put(b"\xff\xd8 live", kind="snapshot")
    async with db.transaction() as session:
        session.add(
            Contact(
                id=cid,
                customer_id=customer,
                skill="accounts",
                state="closed" if closed_at else "assigned",
                created_at=(closed_at or NOW) - timedelta(hours=1),
                queued_at=(closed_at or NOW) - timedelta(hours=1),
                closed_at=closed_at,
            )
        )
        await append(
            session,
            "recording.finalised",
            {
                "side": "agent",
                "file": f"{cid}/attempt-1/agent.mkv.venv",
                "file_id": sealed.file_id.hex(),
                "sha256": sealed.sha256,
                "bytes": sealed.size,
            },
            session_ref=cid,
        )
        await append(
            session,
            "verify.attempt_result",
            {"reference_evidence": ref_key, "live_evidence": live},
            actor=Actor(customer, "customer"),
            session_ref=cid,
        )
    return cid


async def test_expired_files_are_deleted_and_the_deletion_is_audited(
    db: Database, settings: Settings, make_user: MakeUser
) -> None:
    customer = await make_user("cust.ret", Role.CUSTOMER)
    reference = EvidenceStore.from_settings(settings).put(b"on-file photo", kind="reference")
    old = await _contact(db, settings, customer, NOW - timedelta(days=6 * 365), reference)
    recent = await _contact(db, settings, customer, NOW - timedelta(days=365), reference)
    still_open = await _contact(db, settings, customer, None, reference)

    dry = await purge_expired(db, settings, now=NOW, dry_run=True)
    assert [p.contact_id for p in dry] == [old] and len(dry[0].files) == 2
    assert (settings.data_dir / "recordings" / old).exists()

    done = await purge_expired(db, settings, now=NOW)
    assert [p.contact_id for p in done] == [old] and not done[0].failed
    assert sorted(f.split("/")[0] for f in done[0].files) == ["evidence", "recordings"]
    assert not (settings.data_dir / "recordings" / old).exists()
    for cid in (recent, still_open):
        assert any((settings.data_dir / "recordings" / cid).rglob("*.venv"))
    assert EvidenceStore.from_settings(settings).get(reference) == b"on-file photo"
    async with db.sessions() as session:
        rows = (
            await session.execute(
                select(AuditEvent.session_ref, AuditEvent.payload).where(
                    AuditEvent.type == "retention.purged"
                )
            )
        ).all()
        report = await verify_from_database(session, registry_from_settings(settings))
    assert [r.session_ref for r in rows] == [old]
    payload = json.loads(rows[0].payload)
    assert payload["retention_years"] == 5 and sorted(payload["deleted"]) == sorted(done[0].files)
    assert report.ok
    assert await purge_expired(db, settings, now=NOW) == []  # nothing left to delete

    # the contact's bundle still verifies: the files are listed as missing
    out = io.BytesIO()
    info = await export_bundle(db, old, out, settings)
    assert len(info.missing) == 2
    out.seek(0)
    assert verify_bundle(out, registry_from_settings(settings).public_only()).ok

    # a shorter period reaches the recent contact too
    shorter = replace(settings, retention_years=1)
    assert [
        p.contact_id for p in await purge_expired(db, shorter, now=NOW + timedelta(days=2))
    ] == [recent]


def test_cutoff_counts_calendar_years() -> None:
    assert cutoff(datetime(2030, 2, 28, tzinfo=UTC), 5) == datetime(2025, 2, 28, tzinfo=UTC)
    assert cutoff(datetime(2028, 2, 29, tzinfo=UTC), 5) == datetime(2023, 2, 28, tzinfo=UTC)
