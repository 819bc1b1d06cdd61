"""Creating and finding users; every change writes its audit event in the same transaction."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.log import SYSTEM, Actor, append
from vbank.auth.passwords import Passwords, check_password_policy
from vbank.models import AgentProfile, User
from vbank.roles import Role

logger = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
KNOWN_SKILLS = frozenset({"accounts", "cards", "wealth", "loans", "general"})


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


def now() -> datetime:
    return datetime.now(UTC)


async def create_user(
    session: AsyncSession,
    passwords: Passwords,
    *,
    username: str,
    password: str,
    role: Role,
    display_name: str | None = None,
    skills: Iterable[str] = (),
    capacity: int = 2,
    actor: Actor = SYSTEM,
) -> User:
    username = username.strip().lower()
    if not USERNAME_RE.match(username):
        raise UserError("username must be 3-64 characters: a-z, 0-9, '.', '_' or '-'")
    try:
        check_password_policy(password)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    skill_list = sorted({s.strip().lower() for s in skills if s.strip()})
    if role is Role.AGENT:
        unknown = set(skill_list) - KNOWN_SKILLS
        if unknown:
            raise UserError(f"unknown skills: {', '.join(sorted(unknown))}")
        if not skill_list:
            raise UserError("an agent needs at least one skill")
        if not 1 <= capacity <= 10:
            raise UserError("capacity must be between 1 and 10")
    elif skill_list:
        raise UserError("only agents have skills")
    exists = await session.scalar(select(User.id).where(User.username == username))
    if exists is not None:
        raise UserError("username is already taken")
    user = User(
        username=username,
        display_name=(display_name or username)[:128],
        role=role.value,
        password_hash=await passwords.hash_async(password),
        disabled=False,
        created_at=now(),
    )
    session.add(user)
    await session.flush()
    if role is Role.AGENT:
        session.add(AgentProfile(user_id=user.id, skills=",".join(skill_list), capacity=capacity))
    await append(
        session,
        "user.created",
        {"user_id": user.id, "role": role.value, "skills": skill_list, "capacity": capacity}
        if role is Role.AGENT
        else {"user_id": user.id, "role": role.value},
        actor=actor,
    )
    await session.flush()
    return user


async def find_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username.strip().lower()))
