"""Tables of the audit log: the events and the single chain-head row that serialises appends."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vbank.db import Base


class AuditEvent(Base):
    """One append-only event; ``hash`` links it to the previous event's hash.

    Times are integer microseconds and the payload is canonical JSON text, so the hash
    can be recomputed byte for byte on SQLite and PostgreSQL alike.
    """

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    ts_us: Mapped[int] = mapped_column(BigInteger)
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    actor_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    session_ref: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """Exactly one row (id = 1): the last sequence number and hash.

    Appenders lock it (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write lock does
    the same), so concurrent transactions extend the chain one at a time.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
