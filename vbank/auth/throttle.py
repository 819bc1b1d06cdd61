"""Sign-in throttling: after N consecutive failures a key (username or client address) is
locked for a while, doubling with each further failure up to an hour.

Keys are hashed so that the table holds no usernames or addresses in clear.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from vbank.auth.users import now
from vbank.db import utc as _aware
from vbank.models import SigninThrottle

logger = logging.getLogger(__name__)

MAX_LOCK_S = 3600


def throttle_key(kind: str, value: str, secret: str) -> str:
    return hashlib.sha256(f"{secret}:{kind}:{value.lower()}".encode()).hexdigest()


async def locked_for(session: AsyncSession, keys: list[str]) -> int:
    """Seconds until every given key may try again (0 if none is locked)."""
    rows = (
        (await session.execute(select(SigninThrottle).where(SigninThrottle.key.in_(keys))))
        .scalars()
        .all()
    )
    t = now()
    wait = 0
    for row in rows:
        if row.locked_until is not None:
            wait = max(wait, int((_aware(row.locked_until) - t).total_seconds() + 0.999))
    return max(wait, 0)


async def record_failure(
    session: AsyncSession, keys: list[str], max_failures: int, lockout_s: int
) -> datetime | None:
    """Count a failure for each key; returns the lock expiry if this failure locked one."""
    t = now()
    locked: datetime | None = None
    for key in keys:
        row = await session.get(SigninThrottle, key)
        if row is None:
            row = SigninThrottle(key=key, failures=0, locked_until=None, updated_at=t)
            session.add(row)
        row.failures += 1
        row.updated_at = t
        if row.failures >= max_failures:
            extra = row.failures - max_failures
            seconds = min(lockout_s * (2 ** min(extra, 12)), MAX_LOCK_S)
            row.locked_until = t + timedelta(seconds=seconds)
            locked = row.locked_until
    await session.flush()
    return locked


async def record_success(session: AsyncSession, keys: list[str]) -> None:
    await session.execute(delete(SigninThrottle).where(SigninThrottle.key.in_(keys)))
