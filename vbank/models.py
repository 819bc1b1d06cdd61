"""ORM tables of the domain core: users, roles, sign-in sessions, bank accounts, reference photos.

The schema is created only by Alembic migrations (``vbank/migrations``); these classes
describe it for queries and for autogenerate.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vbank.db import Base


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16), index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    agent: Mapped[AgentProfile | None] = relationship(back_populates="user", uselist=False)

    __table_args__ = (
        CheckConstraint("role IN ('customer','agent','auditor','supervisor')", name="role"),
    )


class AgentProfile(Base):
    """Skills (comma-separated, sorted) and concurrent-contact capacity of an agent."""

    __tablename__ = "agent_profiles"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    skills: Mapped[str] = mapped_column(String(256), default="")
    capacity: Mapped[int] = mapped_column(Integer, default=2)

    user: Mapped[User] = relationship(back_populates="agent")

    __table_args__ = (CheckConstraint("capacity BETWEEN 1 AND 10", name="capacity"),)

    @property
    def skill_set(self) -> frozenset[str]:
        return frozenset(s for s in self.skills.split(",") if s)


class AuthSession(Base):
    """A signed-in browser: the cookie carries a random token, we store only its hash."""

    __tablename__ = "auth_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class SigninThrottle(Base):
    """Consecutive failed sign-ins per key (``user:<name>`` or ``ip:<addr>``, hashed)."""

    __tablename__ = "signin_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BankAccount(Base):
    """A customer's account; balances in minor units (exact integers, never floats)."""

    __tablename__ = "bank_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    number: Mapped[str] = mapped_column(String(34), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        CheckConstraint("balance_minor >= 0", name="no_overdraft"),
        UniqueConstraint("owner_id", "name", name="uq_bank_accounts_owner_name"),
    )


class ReferencePhoto(Base):
    """The bank's on-file photo of a customer, kept in the encrypted evidence store."""

    __tablename__ = "reference_photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    storage_key: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
