"""`vbank bench ledger`: confirmed transfers end to end through the trading service (draft,
customer confirmation, ledger execution, audit), with many concurrent clients.

Baselines measured in the same run: the same transfers straight through the ledger
backend (no drafts, no confirmation) and, on SQLite, a bare ``sqlite3`` loop doing the
minimum a durable transfer needs (two balance updates, two entries, one commit).
``conserved`` and ``negative_balances`` check that money was neither created nor lost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from vbank.auth.passwords import Passwords
from vbank.auth.users import create_user
from vbank.contact.models import Contact
from vbank.contact.service import Caller
from vbank.db import Database, is_sqlite
from vbank.migrate import upgrade
from vbank.models import BankAccount
from vbank.roles import Role
from vbank.trading.ledger import LedgerBackend
from vbank.trading.models import LedgerJournal
from vbank.trading.operations import parse_operation
from vbank.trading.rules import Policy
from vbank.trading.service import TradingService

START_BALANCE = 10_000_000
CURRENCY = "CNY"


class _Bank:
    """Customers, each with two accounts and an assigned, verified contact."""

    def __init__(self, db: Database, clients: int) -> None:
        self.db = db
        self.clients = clients
        self.run = uuid.uuid4().hex[:8]
        self.agent = 0
        self.customers: list[int] = []
        self.accounts: list[tuple[str, str]] = []  # per customer: (current, savings) numbers
        self.contacts: list[str] = []

    async def create(self) -> None:
        passwords = Passwords(time_cost=1, memory_kib=8 * 1024)
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            agent = await create_user(
                session,
                passwords,
                username=f"bench-agent-{self.run}",
                password=uuid.uuid4().hex,
                role=Role.AGENT,
                skills=("accounts",),
            )
            self.agent = agent.id
            for i in range(self.clients):
                user = await create_user(
                    session,
                    passwords,
                    username=f"bench-{self.run}-{i}",
                    password=uuid.uuid4().hex,
                    role=Role.CUSTOMER,
                )
                numbers = (f"B{self.run}{i:05d}1", f"B{self.run}{i:05d}2")
                for name, number in zip(("current", "savings"), numbers, strict=True):
                    session.add(
                        BankAccount(
                            owner_id=user.id,
                            number=number,
                            name=name,
                            currency=CURRENCY,
                            balance_minor=START_BALANCE,
                        )
                    )
                contact = Contact(
                    id=uuid.uuid4().hex,
                    customer_id=user.id,
                    agent_id=agent.id,
                    skill="accounts",
                    state="assigned",
                    created_at=now,
                    queued_at=now,
                    assigned_at=now,
                    verified_at=now,
                    verified_by=agent.id,
                )
                session.add(contact)
                self.customers.append(user.id)
                self.accounts.append(numbers)
                self.contacts.append(contact.id)

    def operation(self, i: int, rng: random.Random) -> dict[str, Any]:
        src, dst = self.accounts[i]
        if rng.random() < 0.5:
            src, dst = dst, src
        return {
            "kind": "own_transfer",
            "from_account": src,
            "to_account": dst,
            "amount_minor": rng.randint(1, 5_000),
            "currency": CURRENCY,
        }

    async def totals(self) -> tuple[int, int]:
        """(sum of this run's balances, number of negative balances)."""
        numbers = [n for pair in self.accounts for n in pair]
        async with self.db.sessions() as session:
            total = await session.scalar(
                select(func.coalesce(func.sum(BankAccount.balance_minor), 0)).where(
                    BankAccount.number.in_(numbers)
                )
            )
            negative = await session.scalar(
                select(func.count()).where(
                    BankAccount.number.in_(numbers), BankAccount.balance_minor < 0
                )
            )
        return int(total or 0), int(negative or 0)


async def _through_service(bank: _Bank, transfers: int) -> tuple[float, int]:
    service = TradingService(bank.db, LedgerBackend(bank.db), Policy(step_up_limit_minor=10**12))
    agent = Caller(bank.agent, Role.AGENT)
    per_client = max(1, transfers // bank.clients)
    executed = 0

    async def client(i: int) -> None:
        nonlocal executed
        rng = random.Random(i)
        customer = Caller(bank.customers[i], Role.CUSTOMER)
        for _ in range(per_client):
            draft = await service.draft(agent, bank.contacts[i], bank.operation(i, rng))
            lang = "zh-CN" if rng.random() < 0.5 else "en"
            done = await service.confirm(customer, bank.contacts[i], draft.id, draft.hashes[lang])
            executed += done.state == "executed"

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(bank.clients)))
    return executed / (time.perf_counter() - t0), executed


async def _through_backend(bank: _Bank, transfers: int) -> float:
    backend = LedgerBackend(bank.db)
    per_client = max(1, transfers // bank.clients)

    async def client(i: int) -> None:
        rng = random.Random(1000 + i)
        for _ in range(per_client):
            op = parse_operation(bank.operation(i, rng))
            await backend.execute(op, uuid.uuid4().hex, customer_id=bank.customers[i])

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(bank.clients)))
    return per_client * bank.clients / (time.perf_counter() - t0)


def _raw_sqlite(path: Path, transfers: int) -> float:
    """The floor of a transfer on SQLite as vbank runs it (WAL, synchronous=NORMAL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # as vbank.db configures SQLite
    conn.execute("CREATE TABLE acc (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.execute("CREATE TABLE entry (id INTEGER PRIMARY KEY, acc INTEGER, amount INTEGER)")
    conn.executemany("INSERT INTO acc VALUES (?, ?)", [(1, START_BALANCE), (2, START_BALANCE)])
    t0 = time.perf_counter()
    for i in range(transfers):
        src, dst = (1, 2) if i % 2 else (2, 1)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE acc SET balance = balance - 7 WHERE id = ?", (src,))
        conn.execute("UPDATE acc SET balance = balance + 7 WHERE id = ?", (dst,))
        conn.executemany("INSERT INTO entry (acc, amount) VALUES (?, ?)", [(src, -7), (dst, 7)])
        conn.execute("COMMIT")
    rate = transfers / (time.perf_counter() - t0)
    conn.close()
    return rate


async def _run(url: str, clients: int, transfers: int) -> dict[str, Any]:
    upgrade(url)
    db = Database(url)
    try:
        bank = _Bank(db, clients)
        await bank.create()
        before, _ = await bank.totals()
        service_rate, executed = await _through_service(bank, transfers)
        backend_rate = await _through_backend(bank, transfers)
        after, negative = await bank.totals()
        async with db.sessions() as session:
            journal = await session.scalar(
                select(func.count())
                .select_from(LedgerJournal)
                .where(LedgerJournal.customer_id.in_(bank.customers))
            )
        per_client = max(1, transfers // clients)
        # ratios from the printed rates, so that a reader dividing them gets the same figure
        service, backend = round(service_rate, 1), round(backend_rate, 1)
        return {
            "database": "sqlite" if is_sqlite(url) else "postgresql",
            "clients": clients,
            "transfers": executed,
            "transfers_per_s": service,
            "backend_transfers_per_s": backend,
            "service_ratio": round(service / backend, 3),
            "conserved": before == after == 2 * clients * START_BALANCE,
            "negative_balances": negative,
            "executed_once": journal == 2 * per_client * clients
            and executed == per_client * clients,
        }
    finally:
        await db.close()


def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        result = asyncio.run(_run(url, args.clients, args.transfers))
        if result["database"] == "sqlite":
            raw = _raw_sqlite(Path(tmp) / "raw.sqlite3", min(args.transfers, 2000))
            result["raw_sqlite_transfers_per_s"] = round(raw, 1)
            result["raw_ratio"] = round(
                result["transfers_per_s"] / result["raw_sqlite_transfers_per_s"], 3
            )
    return result
