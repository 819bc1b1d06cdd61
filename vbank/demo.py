"""Demo data for `vbank demo`: customers with accounts and on-file photos, agents, staff.

Seeding is idempotent: a database that already has users is left as it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.log import append
from vbank.auth.passwords import Passwords
from vbank.auth.users import create_user, now
from vbank.config import Settings
from vbank.db import Database
from vbank.evidence import EvidenceStore
from vbank.models import BankAccount, ReferencePhoto, User
from vbank.roles import Role

logger = logging.getLogger(__name__)

DEMO_PASSWORD = "vbank-demo-2026"  # noqa: S105 - printed demo sign-in, demo data only
FACES_DIR = Path(__file__).resolve().parent / "demo_data" / "faces"


@dataclass(frozen=True)
class DemoCustomer:
    username: str
    display_name: str
    photo: str
    accounts: tuple[tuple[str, str, int], ...]  # (name, currency, balance in minor units)


CUSTOMERS = (
    DemoCustomer(
        "kate",
        "Kate (demo)",
        "katie_hill.jpg",
        (("current", "CNY", 1_250_000), ("savings", "CNY", 8_000_000)),
    ),
    DemoCustomer(
        "sandra",
        "Sandra (demo)",
        "alexandria_ocasio_cortez.jpg",
        (("current", "CNY", 420_000), ("savings", "EUR", 1_500_000)),
    ),
    DemoCustomer(
        "lin",
        "Lin (demo)",
        "liveportrait_d18.jpg",
        (("current", "CNY", 3_300_000), ("savings", "CNY", 120_000)),
    ),
)

AGENTS = (
    ("ana", "Ana (agent)", ("accounts", "cards"), 3),
    ("ben", "Ben (agent)", ("wealth", "accounts"), 2),
    ("chen", "Chen (agent)", ("cards", "loans"), 2),
)

STAFF = (
    ("ida", "Ida (auditor)", Role.AUDITOR),
    ("sam", "Sam (supervisor)", Role.SUPERVISOR),
)


def account_number(username: str, name: str) -> str:
    digits = int(hashlib.sha256(f"{username}/{name}".encode()).hexdigest(), 16) % 10**12
    return f"VB{digits:012d}"


async def store_reference_photo(
    session: AsyncSession, store: EvidenceStore, customer: User, photo: Path
) -> ReferencePhoto:
    data = await asyncio.to_thread(photo.read_bytes)
    key = store.put(data, kind="reference")
    row = ReferencePhoto(
        customer_id=customer.id,
        storage_key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/jpeg",
        source=f"demo:{photo.name}",
        created_at=now(),
    )
    session.add(row)
    await session.flush()
    await append(
        session,
        "reference_photo.enrolled",
        {"customer_id": customer.id, "photo_id": row.id, "sha256": row.sha256},
    )
    return row


async def seed_demo(settings: Settings) -> list[tuple[str, str, str]]:
    """Add the demo users once; returns (username, role, note) lines for the banner."""
    db = Database(settings.database_url)
    passwords = Passwords(settings.password_time_cost, settings.password_memory_kib)
    store = EvidenceStore.from_settings(settings)
    lines: list[tuple[str, str, str]] = []
    try:
        async with db.transaction() as session:
            existing = await session.scalar(select(func.count()).select_from(User))
            if not existing:
                for c in CUSTOMERS:
                    user = await create_user(
                        session,
                        passwords,
                        username=c.username,
                        password=DEMO_PASSWORD,
                        role=Role.CUSTOMER,
                        display_name=c.display_name,
                    )
                    for name, currency, balance in c.accounts:
                        session.add(
                            BankAccount(
                                owner_id=user.id,
                                number=account_number(c.username, name),
                                name=name,
                                currency=currency,
                                balance_minor=balance,
                            )
                        )
                    await store_reference_photo(session, store, user, FACES_DIR / c.photo)
                for username, display, skills, capacity in AGENTS:
                    await create_user(
                        session,
                        passwords,
                        username=username,
                        password=DEMO_PASSWORD,
                        role=Role.AGENT,
                        display_name=display,
                        skills=skills,
                        capacity=capacity,
                    )
                for username, display, role in STAFF:
                    await create_user(
                        session,
                        passwords,
                        username=username,
                        password=DEMO_PASSWORD,
                        role=role,
                        display_name=display,
                    )
                logger.info("demo data seeded")
    finally:
        await db.close()
    for c in CUSTOMERS:
        lines.append((c.username, "customer", f"photo {c.photo}"))
    for username, _display, skills, capacity in AGENTS:
        lines.append((username, "agent", f"skills {','.join(skills)}, capacity {capacity}"))
    for username, _display, role in STAFF:
        lines.append((username, role.value, ""))
    return lines
