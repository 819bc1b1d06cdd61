"""Tables of the audit log: the events, the single chain-head row that serialises appends,
and the signed checkpoints."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from vbank.db import Base


class AuditEvent(Base):
    """One append-only event; ``hash`` links it to the previous event's hash.

    Times are integer microseconds and the payload is canonical JSON text, so the hash
    can be recomputed byte for byte on SQLite and PostgreSQL alike. ``format`` says how
    the hash is made (``audit.log``: 1 = chained, 2 = the Merkle leaf); the server
    default 1 is what rows written before the column existed, or by an older appender,
    use.
    """

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    ts_us: Mapped[int] = mapped_column(BigInteger)
    # not indexed: every chat line is an event, and queries by actor also name the session
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    session_ref: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    format: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))


class AuditHead(Base):
    """Exactly one row (id = 1): the last sequence number and hash.

    Appenders lock it (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write lock does
    the same), so concurrent transactions extend the chain one at a time.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed checkpoint of the first ``size`` events (``audit/checkpoints.py``).

    ``note`` is the C2SP signed note (origin, size, Merkle root, signatures) and is all a
    verifier trusts. The note carries no time, so ``signed_at_us`` (integer microseconds)
    records when it was signed: verification checks each key's validity window at that
    time. ``last_hash`` (the chain hash of event ``size``) and ``frontier`` (the Merkle
    compact range, hex) only let the next checkpoint resume without re-reading the log;
    verifiers recompute both. ``published`` says whether every configured witness got it.
    """

    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    root: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    signed_at_us: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    frontier: Mapped[str] = mapped_column(Text)
    published: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
