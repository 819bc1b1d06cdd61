"""The built-in double-entry ledger: refusals, idempotency, audit, and money conservation
under 50 concurrent clients (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from sqlalchemy import func, select

from audit.log import verify_database
from audit.models import AuditEvent
from tests.trading.conftest import Bank
from vbank.models import BankAccount
from vbank.trading.ledger import LedgerBackend, entries_balanced, total_balance
from vbank.trading.models import LedgerEntry, LedgerJournal
from vbank.trading.operations import OperationError, parse_operation


def n(bank: Bank, name: str) -> str:
    return bank.accounts[name].number


async def balances(bank: Bank) -> dict[str, int]:
    async with bank.db.transaction() as s:
        rows = await s.execute(select(BankAccount.number, BankAccount.balance_minor))
        by_number = {num: bal for num, bal in rows}
    return {name: by_number[acc.number] for name, acc in bank.accounts.items()}


def own(
    bank: Bank,
    amount: int,
    src: str = "alice/current",
    dst: str = "alice/savings",
    currency: str = "CNY",
) -> Any:
    return parse_operation(
        {
            "kind": "own_transfer",
            "from_account": n(bank, src),
            "to_account": n(bank, dst),
            "amount_minor": amount,
            "currency": currency,
        }
    )


def payee(
    bank: Bank,
    amount: int,
    src: str = "alice/current",
    dst: str = "bob/current",
    currency: str = "CNY",
) -> Any:
    return parse_operation(
        {
            "kind": "payee_transfer",
            "from_account": n(bank, src),
            "payee_name": "Bob",
            "payee_account": n(bank, dst),
            "amount_minor": amount,
            "currency": currency,
        }
    )


async def refused(ledger: LedgerBackend, op: Any, customer: int, key: str) -> str:
    with pytest.raises(OperationError) as info:
        await ledger.execute(op, key, customer_id=customer)
    assert info.value.message
    assert await ledger.status(key) is None
    return info.value.reason


async def test_transfer_writes_two_entries_and_an_audit_event(bank: Bank) -> None:
    ledger = LedgerBackend(bank.db)
    alice = bank.customers["alice"]
    ex = await ledger.execute(
        payee(bank, 30_000), "key-payee-0001", customer_id=alice, card_hash="ab" * 32, actor_id=None
    )
    assert ex.state == "executed" and ex.amount_minor == 30_000 and ex.reference.startswith("L")
    assert (await balances(bank))["alice/current"] == 70_000
    assert (await balances(bank))["bob/current"] == 30_000
    async with bank.db.transaction() as s:
        entries = (await s.scalars(select(LedgerEntry.amount_minor).order_by(LedgerEntry.id))).all()
        assert entries == [-30_000, 30_000]
        assert await entries_balanced(s)
        events = (
            await s.scalars(select(AuditEvent).where(AuditEvent.type == "transaction.executed"))
        ).all()
        assert len(events) == 1 and '"card_hash":"' + "ab" * 32 in events[0].payload
        assert "Bob" not in events[0].payload  # no payee names in the audit payload
        assert (await verify_database(s)).ok


async def test_same_key_executes_once(bank: Bank) -> None:
    ledger = LedgerBackend(bank.db)
    alice = bank.customers["alice"]
    op = own(bank, 10_000)
    first = await ledger.execute(op, "key-own-00001", customer_id=alice)
    again = await ledger.execute(op, "key-own-00001", customer_id=alice)
    assert again == first and again.replayed and not first.replayed
    assert await ledger.status("key-own-00001") == first
    assert (await balances(bank))["alice/current"] == 90_000
    # a retried confirm racing itself still moves money once
    results = await asyncio.gather(
        *(ledger.execute(op, "key-own-00002", customer_id=alice) for _ in range(10))
    )
    assert len({r.reference for r in results}) == 1
    assert (await balances(bank))["alice/current"] == 80_000
    with pytest.raises(OperationError) as info:
        await ledger.execute(own(bank, 2), "key-own-00001", customer_id=alice)
    assert info.value.reason == "idempotency_key_reused"


async def test_refusals(bank: Bank) -> None:
    ledger = LedgerBackend(bank.db, default_daily_limit_minor=60_000)
    alice, bob = bank.customers["alice"], bank.customers["bob"]
    assert await refused(ledger, own(bank, 100_001), alice, "k-overdraft") == "insufficient_funds"
    assert (
        await refused(ledger, own(bank, 5, "bob/current", "alice/savings"), alice, "k-foreign1")
        == "foreign_account"
    )
    assert await refused(ledger, own(bank, 5), bob, "k-foreign2") == "foreign_account"
    assert (
        await refused(ledger, own(bank, 5, dst="alice/euro"), alice, "k-currency1")
        == "currency_mismatch"
    )
    assert (
        await refused(
            ledger,
            payee(bank, 5, src="alice/euro", dst="bob/current", currency="EUR"),
            alice,
            "k-currency2",
        )
        == "currency_mismatch"
    )
    await ledger.execute(payee(bank, 50_000), "k-limit-ok1", customer_id=alice)
    assert (
        await refused(ledger, payee(bank, 10_001), alice, "k-limit-over") == "daily_limit_exceeded"
    )
    await ledger.execute(
        payee(bank, 10_000), "k-limit-ok2", customer_id=alice
    )  # exactly at the limit
    raise_limit = parse_operation(
        {"kind": "limit_change", "new_daily_limit_minor": 70_000, "currency": "CNY"}
    )
    await ledger.execute(raise_limit, "k-limit-raise", customer_id=alice)
    assert await ledger.daily_limit(alice, "CNY") == 70_000
    await ledger.execute(payee(bank, 10_000), "k-limit-ok3", customer_id=alice)
    assert await refused(ledger, payee(bank, 1), alice, "k-limit-over2") == "daily_limit_exceeded"
    bad_payee = parse_operation({**payee(bank, 5).model_dump(), "payee_account": "VB999"})
    assert await refused(ledger, bad_payee, alice, "k-nopayee") == "unknown_payee_account"
    assert await refused(ledger, own(bank, 5), alice, "bad key!") == "bad_idempotency_key"
    assert (await balances(bank))["alice/current"] == 30_000


async def test_term_deposit_opens_an_account(bank: Bank) -> None:
    ledger = LedgerBackend(bank.db)
    alice = bank.customers["alice"]
    op = parse_operation(
        {
            "kind": "term_deposit",
            "from_account": n(bank, "alice/savings"),
            "amount_minor": 20_000,
            "currency": "CNY",
            "term_months": 6,
        }
    )
    ex = await ledger.execute(op, "k-deposit-01", customer_id=alice)
    async with bank.db.transaction() as s:
        deposit = (
            await s.scalars(select(BankAccount).where(BankAccount.name.like("deposit-6m-%")))
        ).one()
        assert deposit.owner_id == alice and deposit.balance_minor == 20_000
        assert await entries_balanced(s)
    assert ex.kind == "term_deposit"
    assert (await balances(bank))["alice/savings"] == 30_000


@pytest.mark.slow
async def test_fifty_concurrent_clients_conserve_money(bank: Bank) -> None:
    ledger = LedgerBackend(bank.db, default_daily_limit_minor=10**12)
    cny = ["alice/current", "alice/savings", "bob/current"]
    owner = {"alice/current": "alice", "alice/savings": "alice", "bob/current": "bob"}
    async with bank.db.transaction() as s:
        before = await total_balance(s, "CNY")
    rng = random.Random(6)
    plan: list[tuple[str, Any, int]] = []
    for i in range(50 * 8):
        src, dst = rng.sample(cny, 2)
        amount = rng.randint(1, 40_000)
        op = (
            own(bank, amount, src, dst)
            if owner[src] == owner[dst]
            else payee(bank, amount, src, dst)
        )
        plan.append((f"conc-{i:05d}", op, bank.customers[owner[src]]))
    executed: set[str] = set()

    async def client(c: int) -> None:
        for key, op, customer in plan[c::50]:
            for _ in range(2):  # every key confirmed twice: once must be a replay
                try:
                    ex = await ledger.execute(op, key, customer_id=customer)
                except OperationError as exc:
                    assert exc.reason == "insufficient_funds"
                    break
                assert ex.replayed == (key in executed)
                executed.add(key)

    await asyncio.gather(*(client(c) for c in range(50)))
    async with bank.db.transaction() as s:
        assert await total_balance(s, "CNY") == before
        assert await s.scalar(select(func.count()).where(BankAccount.balance_minor < 0)) == 0
        keys = (await s.scalars(select(LedgerJournal.idempotency_key))).all()
        assert sorted(keys) == sorted(executed) and len(keys) == len(set(keys))
        assert await s.scalar(select(func.count(LedgerEntry.id))) == 2 * len(keys)
        assert await entries_balanced(s)
        events = await s.scalar(
            select(func.count()).where(AuditEvent.type == "transaction.executed")
        )
        assert events == len(keys)
    assert len(executed) > 100
