"""The built-in double-entry ledger on our own database (the embedded default backend).

One transaction per execution: lock the customer row (serialises their daily limit),
look the key up again under that lock, lock the account rows in id order (no deadlock
between transfers touching the same accounts), check funds/limits/currency, write the
journal row, two entries summing to zero, the new balances and the audit event.  On
SQLite ``BEGIN IMMEDIATE`` already serialises writers; on PostgreSQL ``FOR UPDATE``
does, and a unique idempotency key settles the rare race of one key on two servers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from audit.log import Actor, append
from vbank.db import Database
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

logger = logging.getLogger(__name__)

DEFAULT_DAILY_LIMIT_MINOR = 5_000_000  # 50,000.00 in a two-decimal currency
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
MAX_ATTEMPTS = 5


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
        # SQLite hands datetimes back naive; they were written in UTC
        executed_at=row.created_at.replace(tzinfo=UTC)
        if row.created_at.tzinfo is None
        else row.created_at,
        replayed=replayed,
    )


def _sqlstate(exc: DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", "") or getattr(orig, "pgcode", "") or "")


async def accounts_of(session: AsyncSession, customer_id: int) -> list[AccountView]:
    """The customer's accounts with balances (what validation and cards are built from)."""
    rows = await session.scalars(
        select(BankAccount).where(BankAccount.owner_id == customer_id).order_by(BankAccount.id)
    )
    return [_view(a) for a in rows]


class LedgerBackend:
    """:class:`~vbank.trading.backend.TradingBackend` on our database."""

    audits_executions = True

    def __init__(
        self, db: Database, *, default_daily_limit_minor: int = DEFAULT_DAILY_LIMIT_MINOR
    ) -> None:
        self.db = db
        self.default_daily_limit_minor = default_daily_limit_minor

    async def close(self) -> None:
        """Nothing to release: the ledger uses the service's database."""

    async def status(self, idempotency_key: str) -> Execution | None:
        async with self.db.transaction() as session:
            row = await session.scalar(
                select(LedgerJournal).where(LedgerJournal.idempotency_key == idempotency_key)
            )
            return _execution(row, replayed=True) if row else None

    async def daily_limit(self, customer_id: int, currency: str) -> int:
        async with self.db.transaction() as session:
            return await self._limit(session, customer_id, currency)

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
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.db.transaction() as session:
                    return await self._execute(
                        session,
                        op,
                        idempotency_key,
                        fingerprint,
                        customer_id,
                        card_hash,
                        actor_id,
                        session_ref,
                    )
            except IntegrityError:
                # the same key committed concurrently elsewhere: its result is ours
                done = await self.status(idempotency_key)
                if done is None:
                    raise
                return self._same_operation(done, fingerprint, await self._fingerprint(done))
            except DBAPIError as exc:
                if _sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt == MAX_ATTEMPTS:
                    raise
                logger.info("ledger transaction retried after %s", _sqlstate(exc))
        raise AssertionError("unreachable")

    async def _fingerprint(self, done: Execution) -> str:
        async with self.db.transaction() as session:
            fp = await session.scalar(
                select(LedgerJournal.fingerprint).where(
                    LedgerJournal.idempotency_key == done.idempotency_key
                )
            )
            return fp or ""

    @staticmethod
    def _same_operation(done: Execution, fingerprint: str, stored: str) -> Execution:
        if stored != fingerprint:
            raise OperationError(
                "idempotency_key_reused",
                "this idempotency key was already used for a different operation",
            )
        return done

    async def _limit(self, session: AsyncSession, customer_id: int, currency: str) -> int:
        limit = await session.scalar(
            select(TransferLimit.daily_limit_minor).where(
                TransferLimit.customer_id == customer_id, TransferLimit.currency == currency
            )
        )
        return self.default_daily_limit_minor if limit is None else limit

    async def _execute(
        self,
        session: AsyncSession,
        op: Operation,
        key: str,
        fingerprint: str,
        customer_id: int,
        card_hash: str,
        actor_id: int | None,
        session_ref: str | None,
    ) -> Execution:
        customer = await session.scalar(
            select(User.id).where(User.id == customer_id, User.role == "customer").with_for_update()
        )
        if customer is None:
            raise OperationError("unknown_customer", "no such customer")
        done = await session.scalar(
            select(LedgerJournal).where(LedgerJournal.idempotency_key == key)
        )
        if done is not None:
            return self._same_operation(
                _execution(done, replayed=True), fingerprint, done.fingerprint
            )

        own = list(
            await session.scalars(select(BankAccount).where(BankAccount.owner_id == customer_id))
        )
        numbers = {a.number: a.id for a in own}
        ids: set[int] = set()
        payee: BankAccount | None = None
        if not isinstance(op, LimitChange):
            if op.from_account in numbers:
                ids.add(numbers[op.from_account])
            if isinstance(op, OwnTransfer) and op.to_account in numbers:
                ids.add(numbers[op.to_account])
        if isinstance(op, PayeeTransfer):
            payee_id = await session.scalar(
                select(BankAccount.id).where(BankAccount.number == op.payee_account)
            )
            if payee_id is None:
                raise OperationError(
                    "unknown_payee_account", "the payee account does not exist in this bank"
                )
            ids.add(payee_id)
        locked = {
            a.id: a
            for a in await session.scalars(
                select(BankAccount)
                .where(BankAccount.id.in_(sorted(ids)))
                .order_by(BankAccount.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        }
        check(op, [_view(a) for a in own])  # balances of ``own`` are fresh where locked

        now = datetime.now(UTC)
        day = now.date().isoformat()
        if isinstance(op, LimitChange):
            amount = op.new_daily_limit_minor
        else:
            amount = op.amount_minor
        if isinstance(op, PayeeTransfer):
            payee = next(a for a in locked.values() if a.number == op.payee_account)
            if payee.currency != op.currency:
                raise OperationError(
                    "currency_mismatch",
                    f"the payee account holds {payee.currency}, the operation is in "
                    f"{op.currency}; only same-currency operations are supported",
                )
            spent = await session.scalar(
                select(func.coalesce(func.sum(LedgerJournal.amount_minor), 0)).where(
                    LedgerJournal.customer_id == customer_id,
                    LedgerJournal.day == day,
                    LedgerJournal.kind == "payee_transfer",
                    LedgerJournal.currency == op.currency,
                )
            )
            limit = await self._limit(session, customer_id, op.currency)
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
        await session.flush()  # the unique key fails here if another server raced us

        legs: list[tuple[BankAccount, int]] = []
        if isinstance(op, LimitChange):
            await self._set_limit(session, customer_id, op, now)
        else:
            src = locked[numbers[op.from_account]]
            if isinstance(op, OwnTransfer):
                dst = locked[numbers[op.to_account]]
            elif isinstance(op, PayeeTransfer):
                assert payee is not None
                dst = payee
            else:
                dst = await self._open_deposit(session, customer_id, op, journal.id)
            legs = [(src, -amount), (dst, amount)]
            for acc, delta in legs:
                acc.balance_minor += delta
                session.add(
                    LedgerEntry(
                        journal_id=journal.id,
                        account_id=acc.id,
                        amount_minor=delta,
                        currency=op.currency,
                    )
                )
            assert sum(d for _, d in legs) == 0
        await append(
            session,
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
            actor=Actor(actor_id, "agent" if actor_id is not None else None),
            session_ref=session_ref,
        )
        await session.flush()
        logger.info("ledger executed %s as L%s", op.kind, journal.id)
        return _execution(journal)

    @staticmethod
    async def _set_limit(
        session: AsyncSession, customer_id: int, op: LimitChange, now: datetime
    ) -> None:
        row = await session.get(TransferLimit, (customer_id, op.currency))
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

    @staticmethod
    async def _open_deposit(
        session: AsyncSession, customer_id: int, op: TermDeposit, journal_id: int
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
        await session.flush()
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
