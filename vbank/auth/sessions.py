"""Server-side sign-in sessions: the cookie holds a random token, the database its SHA-256."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from vbank.auth.users import now
from vbank.db import utc as _aware
from vbank.models import AuthSession, User
from vbank.roles import Role

logger = logging.getLogger(__name__)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The signed-in caller as seen by handlers: who, which role, and the CSRF token."""

    user_id: int
    username: str
    display_name: str
    role: Role
    csrf_token: str
    token_hash: str

    def public(self) -> dict[str, object]:
        return {
            "id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role.value,
        }


async def open_session(session: AsyncSession, user: User, ttl_s: int) -> tuple[str, Principal]:
    """Create a session row; returns the cookie token (shown once) and the principal."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    created = now()
    row = AuthSession(
        token_hash=token_digest(token),
        user_id=user.id,
        csrf_token=csrf,
        created_at=created,
        expires_at=created + timedelta(seconds=ttl_s),
    )
    session.add(row)
    await session.flush()
    return token, Principal(
        user.id, user.username, user.display_name, Role(user.role), csrf, row.token_hash
    )


async def load_session(session: AsyncSession, token: str) -> Principal | None:
    """The principal for a cookie token, or None if unknown, expired or the user is disabled."""
    if not token or len(token) > 128:
        return None
    row = await session.execute(
        select(AuthSession, User)
        .join(User, User.id == AuthSession.user_id)
        .where(AuthSession.token_hash == token_digest(token))
    )
    found = row.first()
    if found is None:
        return None
    auth, user = found
    if _aware(auth.expires_at) <= now() or user.disabled:
        return None
    return Principal(
        user.id, user.username, user.display_name, Role(user.role), auth.csrf_token, auth.token_hash
    )


async def close_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(delete(AuthSession).where(AuthSession.token_hash == token_hash))


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(delete(AuthSession).where(AuthSession.expires_at <= now()))
    return int(getattr(result, "rowcount", 0) or 0)
