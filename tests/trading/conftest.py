"""Customers with accounts for the trading tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vbank.db import Database
from vbank.models import BankAccount
from vbank.roles import Role


@dataclass
class Bank:
    db: Database
    customers: dict[str, int]
    accounts: dict[str, BankAccount]  # "alice/current" -> row (ids and numbers)


async def add_account(
    db: Database, owner: int, name: str, currency: str, balance: int, number: str
) -> BankAccount:
    async with db.transaction() as session:
        acc = BankAccount(
            owner_id=owner, number=number, name=name, currency=currency, balance_minor=balance
        )
        session.add(acc)
        await session.flush()
        return acc


@pytest.fixture
async def bank(db: Database, make_user) -> Bank:  # type: ignore[no-untyped-def]
    customers = {name: await make_user(name, Role.CUSTOMER) for name in ("alice", "bob")}
    accounts = {
        "alice/current": await add_account(
            db, customers["alice"], "current", "CNY", 100_000, "VB000000001001"
        ),
        "alice/savings": await add_account(
            db, customers["alice"], "savings", "CNY", 50_000, "VB000000001002"
        ),
        "alice/euro": await add_account(
            db, customers["alice"], "euro", "EUR", 10_000, "VB000000001003"
        ),
        "bob/current": await add_account(
            db, customers["bob"], "current", "CNY", 0, "VB000000002001"
        ),
        "bob/euro": await add_account(db, customers["bob"], "euro", "EUR", 0, "VB000000002002"),
    }
    return Bank(db, customers, accounts)
