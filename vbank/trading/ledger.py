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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
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
    amount_of,
    check,
    operation_fingerprint,
)
from vbank.writer import defer_audit

logger = logging.getLogger(__name__)

DEFAULT_DAILY_LIMIT_MINOR = 5_000_000  # 50,000.00 in a two-decimal currency


_USERS = cast(Table, User.__table__)
_ACCOUNTS = cast(Table, BankAccount.__table__)
_JOURNAL = cast(Table, LedgerJournal.__table__)
_ENTRIES = cast(Table, LedgerEntry.__table__)
_LIMITS = cast(Table, TransferLimit.__table__)


def _view(acc: Any) -> AccountView:
    return AccountView(acc.id, acc.number, acc.name, acc.currency, acc.balance_minor)


def _execution(row: Any, *, replayed: bool = False) -> Execution:
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


# Statements of the hot path are built once: SQLAlchemy memoises their cache keys, and
# running them on the unit's connection skips the ORM execution layer.
_ACCOUNTS_OF_MANY = (
    select(_ACCOUNTS)
    .where(_ACCOUNTS.c.owner_id.in_(bindparam("owners", expanding=True)))
    .order_by(_ACCOUNTS.c.id)
)
_LOCK_CUSTOMERS = (
    select(_USERS.c.id)
    .where(_USERS.c.id.in_(bindparam("ids", expanding=True)), _USERS.c.role == "customer")
    .order_by(_USERS.c.id)
    .with_for_update()
)
_JOURNAL_BY_KEYS = select(_JOURNAL).where(
    _JOURNAL.c.idempotency_key.in_(bindparam("keys", expanding=True))
)
_LOCK_ACCOUNTS = (
    select(_ACCOUNTS)
    .where(
        or_(
            _ACCOUNTS.c.owner_id.in_(bindparam("owners", expanding=True)),
            _ACCOUNTS.c.number.in_(bindparam("numbers", expanding=True)),
        )
    )
    .order_by(_ACCOUNTS.c.id)
    .with_for_update()
)
_SPENT = (
    select(_JOURNAL.c.customer_id, _JOURNAL.c.currency, func.sum(_JOURNAL.c.amount_minor))
    .where(
        _JOURNAL.c.customer_id.in_(bindparam("ids", expanding=True)),
        _JOURNAL.c.day == bindparam("day"),
        _JOURNAL.c.kind == "payee_transfer",
    )
    .group_by(_JOURNAL.c.customer_id, _JOURNAL.c.currency)
)
_LIMITS_OF = select(_LIMITS.c.customer_id, _LIMITS.c.currency, _LIMITS.c.daily_limit_minor).where(
    _LIMITS.c.customer_id.in_(bindparam("ids", expanding=True))
)
_INSERT_JOURNAL = insert(_JOURNAL).returning(_JOURNAL.c.id, sort_by_parameter_order=True)
_INSERT_ENTRIES = insert(_ENTRIES)
_MOVE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("acc"))
    .values(balance_minor=_ACCOUNTS.c.balance_minor + bindparam("delta"))
)


async def accounts_of(session: AsyncSession, customer_id: int) -> list[AccountView]:
    """The customer's accounts with balances (what validation and cards are built from)."""
    rows = await session.execute(_ACCOUNTS_OF_MANY, {"owners": [customer_id]})
    return [_view(a) for a in rows]


def accounts_by_owner(session: Session, owners: Sequence[int]) -> dict[int, list[AccountView]]:
    """:func:`accounts_of` for several customers at once, inside a writer unit."""
    found: dict[int, list[AccountView]] = {owner: [] for owner in owners}
    for row in session.connection().execute(_ACCOUNTS_OF_MANY, {"owners": list(owners)}):
        found[row.owner_id].append(_view(row))
    return found


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
        posting = Posting(
            op,
            idempotency_key,
            customer_id,
            card_hash=card_hash,
            actor_id=actor_id,
            session_ref=session_ref,
        )
        try:
            result: Execution = await self.db.writer.run_bulk(self.post_many, posting)
            return result
        except IntegrityError:
            # the same key committed concurrently by another server: its result is ours
            async with self.db.sessions() as session:
                done = await session.scalar(
                    select(LedgerJournal).where(LedgerJournal.idempotency_key == idempotency_key)
                )
            if done is None:
                raise
            return _same_operation(
                _execution(done, replayed=True), posting.fingerprint, done.fingerprint
            )

    def post_many(
        self, session: Session, postings: Sequence[Posting]
    ) -> list[Execution | OperationError]:
        """Execute postings inside the caller's (writer) transaction, in order, with one
        statement per step for all of them; a refused posting gets its
        :class:`OperationError` back and writes nothing.

        Core statements only (no ORM unit of work): this is the hot path of every
        confirmed transfer.  Balances, daily limits and keys are tracked as the postings
        are checked one after the other, so postings of one batch see each other."""
        conn = session.connection()
        locking = conn.dialect.name != "sqlite"  # SQLite: BEGIN IMMEDIATE serialises
        customers = sorted({p.customer_id for p in postings})
        known: set[int] = set(customers)
        if locking or not all(p.fresh_key for p in postings):
            known = set(conn.scalars(_LOCK_CUSTOMERS, {"ids": customers}))
        keys = [p.key for p in postings if not p.fresh_key]
        done = (
            {r.idempotency_key: r for r in conn.execute(_JOURNAL_BY_KEYS, {"keys": keys})}
            if keys
            else {}
        )
        payees = sorted({p.op.payee_account for p in postings if isinstance(p.op, PayeeTransfer)})
        rows = conn.execute(_LOCK_ACCOUNTS, {"owners": customers, "numbers": payees}).all()
        balances = {r.id: r.balance_minor for r in rows}
        by_number = {r.number: r for r in rows}
        by_owner: dict[int, list[Any]] = {}
        for r in rows:
            by_owner.setdefault(r.owner_id, []).append(r)
        limits = _Limits(conn, self.default_daily_limit_minor, postings)

        now = datetime.now(UTC)
        outcomes: list[Execution | OperationError] = []
        accepted: list[tuple[int, Posting, int]] = []  # (outcome index, posting, amount)
        claimed: set[str] = set()
        for p in postings:
            try:
                if p.customer_id not in known:
                    raise OperationError("unknown_customer", "no such customer")
                if p.key in done:
                    old = done[p.key]
                    outcomes.append(
                        _same_operation(
                            _execution(old, replayed=True), p.fingerprint, old.fingerprint
                        )
                    )
                    continue
                if p.key in claimed:  # the same key twice in one batch: settle it alone
                    raise _Again
                own = [
                    AccountView(r.id, r.number, r.name, r.currency, balances[r.id])
                    for r in by_owner.get(p.customer_id, ())
                ]
                check(p.op, own)
                amount = amount_of(p.op)
                if isinstance(p.op, PayeeTransfer):
                    limits.check(p.customer_id, p.op, by_number.get(p.op.payee_account))
                if isinstance(p.op, LimitChange):  # later postings of the batch see it
                    limits.limits[(p.customer_id, p.op.currency)] = p.op.new_daily_limit_minor
                for acc, delta in _legs(p.op, by_number, amount):
                    balances[acc] += delta
            except OperationError as exc:
                outcomes.append(exc)
                continue
            claimed.add(p.key)
            accepted.append((len(outcomes), p, amount))
            outcomes.append(OperationError("internal", "not posted"))  # replaced below
        if not accepted:
            return outcomes

        day = now.date().isoformat()
        journal_ids = list(
            conn.scalars(
                _INSERT_JOURNAL,
                [
                    {
                        "idempotency_key": p.key,
                        "fingerprint": p.fingerprint,
                        "kind": p.op.kind,
                        "customer_id": p.customer_id,
                        "amount_minor": amount,
                        "currency": p.op.currency,
                        "card_hash": p.card_hash,
                        "day": day,
                        "created_at": now,
                    }
                    for _, p, amount in accepted
                ],
            )
        )  # a unique key fails here if another server raced us
        entries: list[dict[str, Any]] = []
        moves: dict[int, int] = {}
        for (index, p, amount), journal_id in zip(accepted, journal_ids, strict=True):
            legs: list[tuple[int, int]] = []
            if isinstance(p.op, LimitChange):
                _set_limit(session, p.customer_id, p.op, now)
            else:
                if isinstance(p.op, TermDeposit):
                    deposit = _open_deposit(session, p.customer_id, p.op, journal_id)
                    legs = [(by_number[p.op.from_account].id, -amount), (deposit, amount)]
                else:
                    legs = _legs(p.op, by_number, amount)
                for acc, delta in legs:
                    entries.append(
                        {
                            "journal_id": journal_id,
                            "account_id": acc,
                            "amount_minor": delta,
                            "currency": p.op.currency,
                        }
                    )
                    moves[acc] = moves.get(acc, 0) + delta
            outcomes[index] = self._posted(session, p, journal_id, amount, legs, now)
        if entries:
            conn.execute(_INSERT_ENTRIES, entries)
            conn.execute(
                _MOVE, [{"acc": acc, "delta": delta} for acc, delta in sorted(moves.items())]
            )
        return outcomes

    @staticmethod
    def _posted(
        session: Session,
        p: Posting,
        journal_id: int,
        amount: int,
        legs: list[tuple[int, int]],
        now: datetime,
    ) -> Execution:
        defer_audit(
            session,
            NewEvent(
                "transaction.executed",
                {
                    "idempotency_key": p.key,
                    "reference": f"L{journal_id}",
                    "kind": p.op.kind,
                    "customer_id": p.customer_id,
                    "amount_minor": amount,
                    "currency": p.op.currency,
                    "card_hash": p.card_hash,
                    "accounts": [acc for acc, _ in legs],
                },
                Actor(p.actor_id, "agent" if p.actor_id is not None else None),
                p.session_ref,
            ),
        )
        logger.info("ledger executed %s as L%s", p.op.kind, journal_id)
        return Execution(
            idempotency_key=p.key,
            state="executed",
            kind=p.op.kind,
            reference=f"L{journal_id}",
            amount_minor=amount,
            currency=p.op.currency,
            executed_at=now,
        )


class _Again(Exception):
    """A key posted twice in one batch: raised so that the writer settles the batch item
    by item (the second then finds the first's journal row and replays it)."""


@dataclass(frozen=True)
class Posting:
    """One operation to post under its idempotency key (see :meth:`LedgerBackend.post_many`).

    ``fresh_key`` skips the idempotency lookup when the caller knows the key was never
    executed (a pending draft under its row lock)."""

    op: Operation
    key: str
    customer_id: int
    card_hash: str = ""
    actor_id: int | None = None
    session_ref: str | None = None
    fresh_key: bool = False

    @property
    def fingerprint(self) -> str:
        return operation_fingerprint(self.op, self.customer_id)


def _legs(op: Operation, by_number: dict[str, Any], amount: int) -> list[tuple[int, int]]:
    """(account id, signed amount) for the accounts we hold; a term deposit's new account
    is opened at posting time, so only its source leg is known here."""
    if isinstance(op, LimitChange):
        return []
    src = by_number[op.from_account].id
    if isinstance(op, OwnTransfer):
        return [(src, -amount), (by_number[op.to_account].id, amount)]
    if isinstance(op, PayeeTransfer):
        return [(src, -amount), (by_number[op.payee_account].id, amount)]
    return [(src, -amount)]


class _Limits:
    """Daily payee-transfer limits and what each customer already spent today, read once
    for a batch and kept up to date as its postings are accepted."""

    def __init__(self, conn: Any, default: int, postings: Sequence[Posting]) -> None:
        self.default = default
        self.day = datetime.now(UTC).date().isoformat()
        payers = sorted({p.customer_id for p in postings if isinstance(p.op, PayeeTransfer)})
        self.spent: dict[tuple[int, str], int] = {}
        self.limits: dict[tuple[int, str], int] = {}
        if payers:
            for cid, cur, total in conn.execute(_SPENT, {"ids": payers, "day": self.day}):
                self.spent[(cid, cur)] = int(total)
            for cid, cur, limit in conn.execute(_LIMITS_OF, {"ids": payers}):
                self.limits[(cid, cur)] = int(limit)

    def check(self, customer_id: int, op: PayeeTransfer, payee: Any) -> None:
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
        key = (customer_id, op.currency)
        limit = self.limits.get(key, self.default)
        if self.spent.get(key, 0) + op.amount_minor > limit:
            raise OperationError(
                "daily_limit_exceeded",
                f"the daily limit for transfers to payees ({limit} minor units of "
                f"{op.currency}) would be exceeded",
            )
        self.spent[key] = self.spent.get(key, 0) + op.amount_minor


def _limit_query(customer_id: int, currency: str) -> Any:
    return select(_LIMITS.c.daily_limit_minor).where(
        _LIMITS.c.customer_id == customer_id, _LIMITS.c.currency == currency
    )


def _same_operation(done: Execution, fingerprint: str, stored: str) -> Execution:
    if stored != fingerprint:
        raise OperationError(
            "idempotency_key_reused",
            "this idempotency key was already used for a different operation",
        )
    return done


def _set_limit(session: Session, customer_id: int, op: LimitChange, now: datetime) -> None:
    key = (_LIMITS.c.customer_id == customer_id) & (_LIMITS.c.currency == op.currency)
    result = session.execute(
        update(_LIMITS)
        .where(key)
        .values(daily_limit_minor=op.new_daily_limit_minor, updated_at=now)
        .where(key)
        .values(daily_limit_minor=op.new_daily_limit_minor, updated_at=now)
    )
    if not cast(CursorResult[Any], result).rowcount:
        session.execute(
            insert(_LIMITS).values(
                customer_id=customer_id,
                currency=op.currency,
                daily_limit_minor=op.new_daily_limit_minor,
                updated_at=now,
            )
        )


def _open_deposit(session: Session, customer_id: int, op: TermDeposit, journal_id: int) -> int:
    digits = int(hashlib.sha256(f"deposit/{journal_id}".encode()).hexdigest(), 16) % 10**12
    account_id: int = session.execute(
        insert(_ACCOUNTS)
        .values(
            owner_id=customer_id,
            number=f"TD{digits:012d}",
            name=f"deposit-{op.term_months}m-{journal_id}",
            currency=op.currency,
            balance_minor=0,
        )
        .returning(_ACCOUNTS.c.id)
    ).scalar_one()
    return account_id


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
