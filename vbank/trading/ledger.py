"""The built-in double-entry ledger on our own database (the embedded default backend).

Each execution is one unit of the group-commit writer (:mod:`vbank.writer`): lock the
customer row (serialises their daily limit), look the key up again under that lock, lock
the account rows in id order (no deadlock between transfers touching the same accounts),
check funds/limits/currency, write the journal row, two entries summing to zero, the new
balances and the audit event.  On SQLite ``BEGIN IMMEDIATE`` already serialises writers;
on PostgreSQL ``FOR UPDATE`` does, and a unique idempotency key settles the rare race of
one key on two servers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from audit.log import Actor, NewEvent
from vbank.db import Database, utc
from vbank.models import BankAccount, User
from vbank.trading.backend import Execution, check_key
from vbank.trading.models import LedgerEntry, LedgerJournal, TransferLimit
from vbank.trading.operations import (
    AccountView,
    LimitChange,
    Operation,
    OperationError,
    OwnTransfer,
    PayeeTransfer,
    TermDeposit,
    check,
    operation_fingerprint,
)
from vbank.writer import defer_audit

logger = logging.getLogger(__name__)

DEFAULT_DAILY_LIMIT_MINOR = 5_000_000  # 50,000.00 in a two-decimal currency


def _view(acc: BankAccount) -> AccountView:
    return AccountView(acc.id, acc.number, acc.name, acc.currency, acc.balance_minor)


def _execution(row: LedgerJournal, *, replayed: bool = False) -> Execution:
    return Execution(
        idempotency_key=row.idempotency_key,
        state="executed",
        kind=row.kind,
        reference=f"L{row.id}",
        amount_minor=row.amount_minor,
        currency=row.currency,
        executed_at=utc(row.created_at),
        replayed=replayed,
    )


def _accounts_query(customer_id: int) -> Any:
    return select(BankAccount).where(BankAccount.owner_id == customer_id).order_by(BankAccount.id)


async def accounts_of(session: AsyncSession, customer_id: int) -> list[AccountView]:
    """The customer's accounts with balances (what validation and cards are built from)."""
    return [_view(a) for a in await session.scalars(_accounts_query(customer_id))]


def accounts_of_sync(session: Session, customer_id: int) -> list[AccountView]:
    """:func:`accounts_of` inside a group-commit writer unit."""
    return [_view(a) for a in session.scalars(_accounts_query(customer_id))]


class LedgerBackend:
    """:class:`~vbank.trading.backend.TradingBackend` on our database.

    Executions run as units of the database's group-commit writer: transfers that arrive
    together share one transaction and one commit (see :mod:`vbank.writer`)."""

    audits_executions = True

    def __init__(
        self, db: Database, *, default_daily_limit_minor: int = DEFAULT_DAILY_LIMIT_MINOR
    ) -> None:
        self.db = db
        self.default_daily_limit_minor = default_daily_limit_minor

    async def close(self) -> None:
        """Nothing to release: the ledger uses the service's database."""

    async def status(self, idempotency_key: str) -> Execution | None:
        async with self.db.sessions() as session:
            row = await session.scalar(
                select(LedgerJournal).where(LedgerJournal.idempotency_key == idempotency_key)
            )
            return _execution(row, replayed=True) if row else None

    async def daily_limit(self, customer_id: int, currency: str) -> int:
        async with self.db.sessions() as session:
            limit = await session.scalar(_limit_query(customer_id, currency))
            return self.default_daily_limit_minor if limit is None else limit

    async def execute(
        self,
        op: Operation,
        idempotency_key: str,
        *,
        customer_id: int,
        card_hash: str = "",
        actor_id: int | None = None,
        session_ref: str | None = None,
    ) -> Execution:
        check_key(idempotency_key)
        fingerprint = operation_fingerprint(op, customer_id)
        try:
            return await self.db.writer.run(
                lambda session: self.post(
                    session,
                    op,
                    idempotency_key,
                    customer_id=customer_id,
                    card_hash=card_hash,
                    actor_id=actor_id,
                    session_ref=session_ref,
                    fingerprint=fingerprint,
                )
            )
        except IntegrityError:
            # the same key committed concurrently by another server: its result is ours
            async with self.db.sessions() as session:
                done = await session.scalar(
                    select(LedgerJournal).where(LedgerJournal.idempotency_key == idempotency_key)
                )
            if done is None:
                raise
            return _same_operation(_execution(done, replayed=True), fingerprint, done.fingerprint)

    def post(
        self,
        session: Session,
        op: Operation,
        key: str,
        *,
        customer_id: int,
        card_hash: str = "",
        actor_id: int | None = None,
        session_ref: str | None = None,
        fingerprint: str | None = None,
    ) -> Execution:
        """Execute ``op`` inside the caller's (writer) transaction; raises
        :class:`OperationError` when refused, before writing anything."""
        fingerprint = fingerprint or operation_fingerprint(op, customer_id)
        customer = session.scalar(
            select(User.id).where(User.id == customer_id, User.role == "customer").with_for_update()
        )
        if customer is None:
            raise OperationError("unknown_customer", "no such customer")
        done = session.scalar(select(LedgerJournal).where(LedgerJournal.idempotency_key == key))
        if done is not None:
            return _same_operation(_execution(done, replayed=True), fingerprint, done.fingerprint)

        # the customer's accounts (and the payee's), locked in id order: no deadlocks
        wanted = BankAccount.owner_id == customer_id
        if isinstance(op, PayeeTransfer):
            wanted = or_(wanted, BankAccount.number == op.payee_account)
        rows = session.scalars(
            select(BankAccount)
            .where(wanted)
            .order_by(BankAccount.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
        own = [a for a in rows if a.owner_id == customer_id]
        check(op, [_view(a) for a in own])
        by_number = {a.number: a for a in rows}

        now = datetime.now(UTC)
        day = now.date().isoformat()
        amount = op.new_daily_limit_minor if isinstance(op, LimitChange) else op.amount_minor
        payee: BankAccount | None = None
        if isinstance(op, PayeeTransfer):
            payee = by_number.get(op.payee_account)
            if payee is None:
                raise OperationError(
                    "unknown_payee_account", "the payee account does not exist in this bank"
                )
            if payee.currency != op.currency:
                raise OperationError(
                    "currency_mismatch",
                    f"the payee account holds {payee.currency}, the operation is in "
                    f"{op.currency}; only same-currency operations are supported",
                )
            spent = session.scalar(
                select(func.coalesce(func.sum(LedgerJournal.amount_minor), 0)).where(
                    LedgerJournal.customer_id == customer_id,
                    LedgerJournal.day == day,
                    LedgerJournal.kind == "payee_transfer",
                    LedgerJournal.currency == op.currency,
                )
            )
            stored = session.scalar(_limit_query(customer_id, op.currency))
            limit = self.default_daily_limit_minor if stored is None else stored
            if int(spent or 0) + amount > limit:
                raise OperationError(
                    "daily_limit_exceeded",
                    f"the daily limit for transfers to payees ({limit} minor units of "
                    f"{op.currency}) would be exceeded",
                )

        journal = LedgerJournal(
            idempotency_key=key,
            fingerprint=fingerprint,
            kind=op.kind,
            customer_id=customer_id,
            amount_minor=amount,
            currency=op.currency,
            card_hash=card_hash,
            day=day,
            created_at=now,
        )
        session.add(journal)
        session.flush()  # the unique key fails here if another server raced us

        legs: list[tuple[BankAccount, int]] = []
        if isinstance(op, LimitChange):
            _set_limit(session, customer_id, op, now)
        else:
            src = by_number[op.from_account]
            if isinstance(op, OwnTransfer):
                dst = by_number[op.to_account]
            elif isinstance(op, PayeeTransfer):
                assert payee is not None
                dst = payee
            else:
                dst = _open_deposit(session, customer_id, op, journal.id)
            legs = [(src, -amount), (dst, amount)]
            for acc, delta in legs:
                acc.balance_minor += delta
            session.add_all(
                LedgerEntry(
                    journal_id=journal.id,
                    account_id=acc.id,
                    amount_minor=delta,
                    currency=op.currency,
                )
                for acc, delta in legs
            )
            assert sum(d for _, d in legs) == 0
        session.flush()
        defer_audit(
            session,
            NewEvent(
                "transaction.executed",
                {
                    "idempotency_key": key,
                    "reference": f"L{journal.id}",
                    "kind": op.kind,
                    "customer_id": customer_id,
                    "amount_minor": amount,
                    "currency": op.currency,
                    "card_hash": card_hash,
                    "accounts": [acc.id for acc, _ in legs],
                },
                Actor(actor_id, "agent" if actor_id is not None else None),
                session_ref,
            ),
        )
        logger.info("ledger executed %s as L%s", op.kind, journal.id)
        return _execution(journal)


def _limit_query(customer_id: int, currency: str) -> Any:
    return select(TransferLimit.daily_limit_minor).where(
        TransferLimit.customer_id == customer_id, TransferLimit.currency == currency
    )


def _same_operation(done: Execution, fingerprint: str, stored: str) -> Execution:
    if stored != fingerprint:
        raise OperationError(
            "idempotency_key_reused",
            "this idempotency key was already used for a different operation",
        )
    return done


def _set_limit(session: Session, customer_id: int, op: LimitChange, now: datetime) -> None:
    row = session.get(TransferLimit, (customer_id, op.currency))
    if row is None:
        session.add(
            TransferLimit(
                customer_id=customer_id,
                currency=op.currency,
                daily_limit_minor=op.new_daily_limit_minor,
                updated_at=now,
            )
        )
    else:
        row.daily_limit_minor = op.new_daily_limit_minor
        row.updated_at = now


def _open_deposit(
    session: Session, customer_id: int, op: TermDeposit, journal_id: int
) -> BankAccount:
    digits = int(hashlib.sha256(f"deposit/{journal_id}".encode()).hexdigest(), 16) % 10**12
    acc = BankAccount(
        owner_id=customer_id,
        number=f"TD{digits:012d}",
        name=f"deposit-{op.term_months}m-{journal_id}",
        currency=op.currency,
        balance_minor=0,
    )
    session.add(acc)
    session.flush()
    return acc


async def total_balance(session: AsyncSession, currency: str) -> int:
    """Sum of all balances in one currency (conservation checks, benchmarks)."""
    return int(
        await session.scalar(
            select(func.coalesce(func.sum(BankAccount.balance_minor), 0)).where(
                BankAccount.currency == currency
            )
        )
        or 0
    )


async def entries_balanced(session: AsyncSession) -> bool:
    """Every journal row's entries sum to zero."""
    bad: Sequence[int] = (
        await session.scalars(
            select(LedgerEntry.journal_id)
            .group_by(LedgerEntry.journal_id)
            .having(func.sum(LedgerEntry.amount_minor) != 0)
        )
    ).all()
    return not bad
