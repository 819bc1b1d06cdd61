"""`vbank demo` data: customers with accounts and encrypted on-file photos, agents, staff."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import func, select

from audit.envelope import EnvelopeError
from audit.log import verify_database
from vbank.config import Settings
from vbank.db import Database
from vbank.demo import CUSTOMERS, FACES_DIR, seed_demo
from vbank.evidence import EvidenceStore
from vbank.models import AgentProfile, BankAccount, ReferencePhoto, User


async def test_demo_seed_is_complete_encrypted_and_audited(
    settings: Settings, db: Database
) -> None:
    lines = await seed_demo(settings)
    again = await seed_demo(settings)  # idempotent
    assert lines == again
    async with db.sessions() as session:
        roles = dict(
            (await session.execute(select(User.role, func.count()).group_by(User.role))).all()
        )
        assert roles == {"customer": 3, "agent": 3, "auditor": 1, "supervisor": 1}
        skills = {p.skills for p in (await session.execute(select(AgentProfile))).scalars()}
        assert len(skills) == 3, "agents should have different skills"
        accounts = (await session.execute(select(BankAccount))).scalars().all()
        assert len({a.owner_id for a in accounts}) == 3
        assert all(a.balance_minor > 0 for a in accounts)
        photos = (await session.execute(select(ReferencePhoto))).scalars().all()
        assert len(photos) == 3
        report = await verify_database(session)
    assert report.ok and report.events >= 8 + 3
    store = EvidenceStore.from_settings(settings)
    originals = {hashlib.sha256((FACES_DIR / c.photo).read_bytes()).hexdigest() for c in CUSTOMERS}
    for photo in photos:
        on_disk = next(
            Path(settings.data_dir, "evidence").rglob(photo.storage_key.split("/")[1] + ".venv")
        )
        raw = on_disk.read_bytes()
        assert b"JFIF" not in raw and b"\xff\xd8\xff" not in raw[:512], "photo stored in clear"
        plain = store.get(photo.storage_key)
        assert hashlib.sha256(plain).hexdigest() == photo.sha256
    assert {p.sha256 for p in photos} == originals


async def test_evidence_is_refused_with_another_master_key(settings: Settings) -> None:
    from audit.envelope import MasterKeyring

    store = EvidenceStore.from_settings(settings)
    key = store.put(b"snapshot bytes", kind="snapshot")
    assert store.get(key) == b"snapshot bytes"
    other = EvidenceStore(store.root, MasterKeyring({"other": b"\x01" * 32}, current="other"))
    with pytest.raises(EnvelopeError):
        other.get(key)
    # a file moved to another key's name is refused (the file id is checked)
    path = next(store.root.rglob("*.venv"))
    forged = path.with_name("0" * 32 + ".venv")
    forged.write_bytes(path.read_bytes())
    with pytest.raises(EnvelopeError):
        store.get("snapshot/" + "0" * 32)
