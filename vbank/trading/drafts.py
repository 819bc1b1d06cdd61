"""The draft table: an operation the agent prepared, waiting for the customer's decision.

A draft carries the exact cards rendered for it (English and Chinese) and their hashes:
the customer confirms one of those hashes, so what is executed is what they saw.  Its id
is also the idempotency key handed to the trading backend (one draft executes once).
"""

from __future__ import annotations

from datetime import datetime
from typing import get_args

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from signaling.protocol import TradeState
from vbank.db import Base

#: pending → confirmed (executing) → executed | failed | status_unknown;
#: pending → rejected | withdrawn | expired  (the states trade.card frames carry)
DRAFT_STATES: tuple[str, ...] = get_args(TradeState)


class TradeDraft(Base):
    __tablename__ = "trade_drafts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        ForeignKey("contacts.id", ondelete="RESTRICT"), index=True
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(Text)  # canonical JSON of the operation
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    cards: Mapped[str] = mapped_column(Text)  # canonical JSON {lang: card}
    card_hash_en: Mapped[str] = mapped_column(String(64))
    card_hash_zh: Mapped[str] = mapped_column(String(64))
    step_up: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    confirmed_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reference: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        CheckConstraint(
            "state IN (" + ",".join(f"'{s}'" for s in DRAFT_STATES) + ")", name="state"
        ),
    )
