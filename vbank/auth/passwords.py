"""Password hashing with Argon2id (argon2-cffi); hashing runs off the event loop."""

from __future__ import annotations

import asyncio
import logging

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

logger = logging.getLogger(__name__)

MAX_PASSWORD_CHARS = 256


class Passwords:
    """Hashes and checks passwords; the cost parameters come from settings."""

    def __init__(self, time_cost: int = 2, memory_kib: int = 19 * 1024) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        # A fixed hash to verify against for unknown users, so that response time
        # does not reveal whether a username exists.
        self._dummy = self._hasher.hash("not-a-real-password")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and bool(
                password_hash
            )
        except (VerificationError, InvalidHashError):
            return False

    async def hash_async(self, password: str) -> str:
        return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self.verify, password_hash, password)


def check_password_policy(password: str) -> None:
    """Refuse passwords a bank would not accept (raises ValueError with the reason)."""
    if len(password) < 10:
        raise ValueError("password must have at least 10 characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password must have at most {MAX_PASSWORD_CHARS} characters")
