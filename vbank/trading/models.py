"""Tables of the built-in double-entry ledger: a journal row per operation, its entries,
and per-customer daily limits.  Balances stay in ``bank_accounts.balance_minor``; the
entries of a journal row always sum to zero, so money is never created or lost."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from vbank.db import Base


class LedgerJournal(Base):
    """One executed operation, keyed by its unique idempotency key."""

    __tablename__ = "ledger_journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    card_hash: Mapped[str] = mapped_column(String(64), default="")
    day: Mapped[str] = mapped_column(String(10))  # UTC date, for daily limits
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_ledger_journal_customer_day", "customer_id", "day", "kind"),
        CheckConstraint("amount_minor > 0", name="positive_amount"),
    )


class LedgerEntry(Base):
    """One leg of a journal row: signed minor units on one account."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    journal_id: Mapped[int] = mapped_column(
        ForeignKey("ledger_journal.id", ondelete="RESTRICT"), index=True
    )
    account_id: Mapped[int] = mapped_column(
        ForeignKey("bank_accounts.id", ondelete="RESTRICT"), index=True
    )
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))

    __table_args__ = (CheckConstraint("amount_minor <> 0", name="nonzero_amount"),)


class TransferLimit(Base):
    """A customer's daily limit for transfers to payees in one currency."""

    __tablename__ = "transfer_limits"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    daily_limit_minor: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("daily_limit_minor >= 0", name="nonnegative_limit"),)
