"""Posting a batch at once is the same as posting its items one after the other: same
outcome for every item (executed, or refused with the same reason) and same balances,
for random batches that overdraw, hit the daily limit, change limits, open deposits and
mix customers (the bulk path tracks running balances and limits inside the batch)."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.trading.conftest import Bank
from tests.trading.test_ledger import n, own, payee
from vbank.models import BankAccount
from vbank.trading.ledger import LedgerBackend, Posting
from vbank.trading.operations import OperationError, parse_operation


def _random_posting(bank: Bank, rng: random.Random, key: str) -> Posting:
    alice, bob = bank.customers["alice"], bank.customers["bob"]
    roll = rng.random()
    amount = rng.choice([1, 500, 20_000, 60_000, 150_000])
    if roll < 0.35:
        src, dst = rng.sample(["alice/current", "alice/savings"], 2)
        return Posting(own(bank, amount, src, dst), key, alice)
    if roll < 0.6:
        return Posting(payee(bank, amount), key, alice)
    if roll < 0.7:
        op = parse_operation(
            {
                "kind": "payee_transfer",
                "from_account": n(bank, "bob/current"),
                "payee_name": "Alice",
                "payee_account": n(bank, "alice/savings"),
                "amount_minor": amount,
                "currency": "CNY",
            }
        )
        return Posting(op, key, bob)
    if roll < 0.8:
        op = parse_operation(
            {"kind": "limit_change", "new_daily_limit_minor": amount * 2, "currency": "CNY"}
        )
        return Posting(op, key, alice)
    if roll < 0.9:
        op = parse_operation(
            {
                "kind": "term_deposit",
                "from_account": n(bank, "alice/savings"),
                "amount_minor": amount,
                "currency": "CNY",
                "term_months": 12,
            }
        )
        return Posting(op, key, alice)
    return Posting(own(bank, amount, "alice/euro", "alice/current"), key, alice)  # refused


def _outcome(result: Any) -> str:
    return result.reason if isinstance(result, OperationError) else "executed"


def _balances(session: Session) -> dict[str, int]:
    rows = session.execute(select(BankAccount.number, BankAccount.balance_minor)).all()
    return {num: bal for num, bal in rows if not num.startswith("TD")}


def _deposits(session: Session) -> list[int]:
    rows = session.execute(select(BankAccount.number, BankAccount.balance_minor)).all()
    return sorted(bal for num, bal in rows if num.startswith("TD"))


async def test_a_batch_posts_like_its_items_one_by_one(bank: Bank) -> None:
    ledger = LedgerBackend(bank.db, default_daily_limit_minor=100_000)
    engine = bank.db.writer.engine
    rng = random.Random(20261122)
    seen: set[str] = set()
    for round_ in range(25):
        postings = [
            _random_posting(bank, rng, f"bulk-{round_:02d}-{i:02d}")
            for i in range(rng.randint(2, 14))
        ]
        with Session(engine) as session, session.begin():
            together = [_outcome(r) for r in ledger.post_many(session, postings)]
            after_together = (_balances(session), _deposits(session))
            session.rollback()
        with Session(engine) as session, session.begin():
            alone = [_outcome(ledger.post_many(session, [p])[0]) for p in postings]
            after_alone = (_balances(session), _deposits(session))
            session.rollback()
        assert together == alone, (round_, postings)
        assert after_together == after_alone, round_
        assert min(after_together[0].values()) >= 0
        seen.update(together)
    # the random batches did exercise executions and each kind of refusal
    assert {"executed", "insufficient_funds", "daily_limit_exceeded", "currency_mismatch"} <= seen
