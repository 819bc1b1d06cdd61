"""The draft → confirm → execute flow on a real database: every refusal named, money moved
once however often the customer confirms, and crashes repaired by reconciliation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from audit.log import verify_database
from audit.models import AuditEvent
from tests.trading.conftest import Bank
from tests.trading.test_http_adapter import Core, serve
from vbank.contact.models import Contact
from vbank.contact.service import Caller
from vbank.db import Database
from vbank.models import BankAccount
from vbank.roles import Role
from vbank.trading.drafts import TradeDraft
from vbank.trading.http_adapter import HttpBackend
from vbank.trading.ledger import LedgerBackend
from vbank.trading.operations import OperationError
from vbank.trading.rules import Policy
from vbank.trading.service import TradeRefused, TradingService


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def open_contact(
    db: Database, customer: int, agent: int, verified_at: datetime | None
) -> str:
    cid = uuid.uuid4().hex
    now = datetime.now(UTC)
    async with db.transaction() as session:
        session.add(
            Contact(
                id=cid,
                customer_id=customer,
                agent_id=agent,
                skill="accounts",
                state="assigned",
                created_at=now,
                queued_at=now,
                assigned_at=now,
                verified_at=verified_at,
                verified_by=agent if verified_at else None,
            )
        )
    return cid


async def set_verified(db: Database, contact_id: str, at: datetime) -> None:
    async with db.transaction() as session:
        row = await session.get(Contact, contact_id)
        assert row is not None
        row.verified_at = at


async def balance(db: Database, number: str) -> int:
    async with db.sessions() as session:
        value = await session.scalar(
            select(BankAccount.balance_minor).where(BankAccount.number == number)
        )
        assert value is not None
        return value


async def events(db: Database, prefix: str = "") -> list[str]:
    async with db.sessions() as session:
        types = await session.scalars(select(AuditEvent.type).order_by(AuditEvent.seq))
        return [t for t in types if t.startswith(prefix)]


def own(amount: int, src: str = "VB000000001001", dst: str = "VB000000001002") -> dict[str, Any]:
    return {
        "kind": "own_transfer",
        "from_account": src,
        "to_account": dst,
        "amount_minor": amount,
        "currency": "CNY",
    }


class Flow:
    def __init__(self, bank: Bank, agent: int, clock: Clock, policy: Policy) -> None:
        self.bank, self.db, self.clock = bank, bank.db, clock
        self.agent = Caller(agent, Role.AGENT)
        self.alice = Caller(bank.customers["alice"], Role.CUSTOMER)
        self.bob = Caller(bank.customers["bob"], Role.CUSTOMER)
        self.service = TradingService(self.db, LedgerBackend(self.db), policy, clock=clock)


@pytest.fixture
async def flow(bank: Bank, make_user) -> Flow:  # type: ignore[no-untyped-def]
    agent = await make_user("agent-t", Role.AGENT)
    return Flow(bank, agent, Clock(), Policy(draft_ttl_s=60, verification_max_age_s=600))


async def test_draft_confirm_executes_once(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    draft = await flow.service.draft(flow.agent, cid, own(2_500))
    assert draft.state == "pending" and not draft.step_up
    assert draft.cards["zh-CN"]["lines"][0] == ["金额", "人民币 25.00"]
    assert draft.cards["en"]["lines"][0] == ["Amount", "CNY 25.00"]

    done = await flow.service.confirm(flow.alice, cid, draft.id, draft.hashes["zh-CN"])
    assert done.state == "executed" and done.reference and done.reference.startswith("L")
    with pytest.raises(TradeRefused) as again:
        await flow.service.confirm(flow.alice, cid, draft.id, draft.hashes["zh-CN"])
    assert again.value.reason == "already_decided"
    assert again.value.draft is not None and again.value.draft.state == "executed"

    assert await balance(flow.db, "VB000000001001") == 100_000 - 2_500
    assert await balance(flow.db, "VB000000001002") == 50_000 + 2_500
    assert await events(flow.db, "trade.") + await events(flow.db, "transaction.") == [
        "trade.drafted",
        "trade.confirmed",
        "trade.executed",
        "transaction.executed",
    ]
    async with flow.db.sessions() as session:
        confirmed = await session.scalar(
            select(AuditEvent.payload).where(AuditEvent.type == "trade.confirmed")
        )
        assert confirmed is not None and draft.hashes["zh-CN"] in confirmed and "zh-CN" in confirmed
        assert (await verify_database(session)).ok


async def test_concurrent_confirms_execute_once(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    draft = await flow.service.draft(flow.agent, cid, own(1_000))
    results = await asyncio.gather(
        *(flow.service.confirm(flow.alice, cid, draft.id, draft.hashes["en"]) for _ in range(8)),
        return_exceptions=True,
    )
    executed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, TradeRefused)]
    assert len(executed) == 1 and executed[0].state == "executed"
    assert len(refused) == 7 and {r.reason for r in refused} == {"already_decided"}
    assert await balance(flow.db, "VB000000001001") == 99_000


async def test_unverified_session_cannot_draft(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, None)
    with pytest.raises(OperationError) as exc:
        await flow.service.draft(flow.agent, cid, own(100))
    assert exc.value.reason == "not_verified"
    with pytest.raises(OperationError) as acc:
        await flow.service.accounts(flow.agent, cid)
    assert acc.value.reason == "not_verified"


async def test_confirm_after_expiry_is_refused(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    draft = await flow.service.draft(flow.agent, cid, own(100))
    flow.clock.advance(61)
    with pytest.raises(TradeRefused) as exc:
        await flow.service.confirm(flow.alice, cid, draft.id, draft.hashes["en"])
    assert exc.value.reason == "draft_expired"
    assert exc.value.draft is not None and exc.value.draft.state == "expired"
    assert await balance(flow.db, "VB000000001001") == 100_000


async def test_expire_due_sweeps_pending_drafts(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    first = await flow.service.draft(flow.agent, cid, own(100))
    flow.clock.advance(30)
    second = await flow.service.draft(flow.agent, cid, own(200))
    flow.clock.advance(31)
    expired = await flow.service.expire_due()
    assert [d.id for d in expired] == [first.id]
    assert [d.state for d in await flow.service.drafts(flow.alice, cid)] == ["expired", "pending"]
    assert second.id in {d.id for d in await flow.service.drafts(flow.agent, cid)}


async def test_another_customer_cannot_confirm(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    draft = await flow.service.draft(flow.agent, cid, own(100))
    bob_cid = await open_contact(flow.db, flow.bob.user_id, flow.agent.user_id, flow.clock.now)
    for contact in (cid, bob_cid):
        with pytest.raises(OperationError) as exc:
            await flow.service.confirm(flow.bob, contact, draft.id, draft.hashes["en"])
        assert exc.value.reason == "not_found"
    other_agent = Caller(flow.bob.user_id + 1000, Role.AGENT)
    with pytest.raises(OperationError):
        await flow.service.withdraw(other_agent, cid, draft.id)
    assert (await flow.service.drafts(flow.alice, cid))[0].state == "pending"


async def test_stale_verification_needs_a_new_face_check(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    draft = await flow.service.draft(flow.agent, cid, own(100))
    flow.clock.advance(59)
    await set_verified(flow.db, cid, flow.clock.now - timedelta(seconds=601))
    with pytest.raises(TradeRefused) as exc:
        await flow.service.confirm(flow.alice, cid, draft.id, draft.hashes["en"])
    assert exc.value.reason == "verification_stale"
    assert exc.value.draft is not None and exc.value.draft.state == "pending"
    assert exc.value.draft.reason == "verification_stale"
    await set_verified(flow.db, cid, flow.clock.now)
    assert (await flow.service.confirm(flow.alice, cid, draft.id, draft.hashes["en"])).state == (
        "executed"
    )
    assert "trade.refused" in await events(flow.db, "trade.")


async def test_step_up_needs_a_face_check_after_the_draft(bank: Bank, make_user) -> None:  # type: ignore[no-untyped-def]
    agent = await make_user("agent-s", Role.AGENT)
    clock = Clock()
    flow = Flow(bank, agent, clock, Policy(step_up_limit_minor=5_000))
    cid = await open_contact(flow.db, flow.alice.user_id, agent, clock.now)
    small = await flow.service.draft(flow.agent, cid, own(5_000))
    big = await flow.service.draft(flow.agent, cid, own(5_001))
    assert not small.step_up and big.step_up
    with pytest.raises(TradeRefused) as exc:
        await flow.service.confirm(flow.alice, cid, big.id, big.hashes["en"])
    assert exc.value.reason == "step_up_required"
    assert (await flow.service.confirm(flow.alice, cid, small.id, small.hashes["en"])).state == (
        "executed"
    )
    clock.advance(1)
    await set_verified(flow.db, cid, clock.now)  # the agent ran the face check again
    assert (await flow.service.confirm(flow.alice, cid, big.id, big.hashes["en"])).state == (
        "executed"
    )
    assert await balance(flow.db, "VB000000001001") == 100_000 - 10_001


async def test_card_hash_must_match_what_was_shown(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    draft = await flow.service.draft(flow.agent, cid, own(100))
    other = await flow.service.draft(flow.agent, cid, own(900))
    with pytest.raises(TradeRefused) as exc:
        await flow.service.confirm(flow.alice, cid, draft.id, other.hashes["en"])
    assert exc.value.reason == "card_mismatch"
    assert await balance(flow.db, "VB000000001001") == 100_000


async def test_withdrawn_and_rejected_drafts_cannot_be_confirmed(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    a = await flow.service.draft(flow.agent, cid, own(100))
    b = await flow.service.draft(flow.agent, cid, own(200))
    assert (await flow.service.withdraw(flow.agent, cid, a.id)).state == "withdrawn"
    assert (await flow.service.reject(flow.alice, cid, b.id, "changed my mind")).state == (
        "rejected"
    )
    for d in (a, b):
        with pytest.raises(TradeRefused) as exc:
            await flow.service.confirm(flow.alice, cid, d.id, d.hashes["en"])
        assert exc.value.reason == "already_decided"
    with pytest.raises(TradeRefused):
        await flow.service.withdraw(flow.agent, cid, b.id)
    assert await balance(flow.db, "VB000000001001") == 100_000


async def test_backend_refusal_fails_the_draft(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    first = await flow.service.draft(flow.agent, cid, own(80_000))
    second = await flow.service.draft(flow.agent, cid, own(80_000))  # funds checked at draft time
    await flow.service.confirm(flow.alice, cid, first.id, first.hashes["en"])
    failed = await flow.service.confirm(flow.alice, cid, second.id, second.hashes["en"])
    assert failed.state == "failed" and failed.reason == "insufficient_funds"
    assert await balance(flow.db, "VB000000001001") == 20_000


async def test_closed_contact_withdraws_pending_drafts(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    draft = await flow.service.draft(flow.agent, cid, own(100))
    [ended] = await flow.service.contact_ended(cid, "contact_closed")
    assert ended.id == draft.id and ended.state == "withdrawn"
    async with flow.db.transaction() as session:
        row = await session.get(Contact, cid)
        assert row is not None
        row.state = "closed"
    with pytest.raises(OperationError) as exc:
        await flow.service.confirm(flow.alice, cid, draft.id, draft.hashes["en"])
    assert exc.value.reason == "contact_closed"


async def test_reconcile_repairs_a_crash_between_confirm_and_execute(flow: Flow) -> None:
    cid = await open_contact(flow.db, flow.alice.user_id, flow.agent.user_id, flow.clock.now)
    lost = await flow.service.draft(flow.agent, cid, own(300))
    done = await flow.service.draft(flow.agent, cid, own(400))
    await flow.service.confirm(flow.alice, cid, done.id, done.hashes["en"])
    async with flow.db.transaction() as session:  # as if the process died after "confirmed"
        for draft_id, hash_ in ((lost.id, lost.hashes["en"]), (done.id, done.hashes["en"])):
            row = await session.get(TradeDraft, draft_id)
            assert row is not None
            row.state, row.confirmed_hash = "confirmed", hash_
            row.decided_at = flow.clock.now
    assert await flow.service.reconcile() == []  # too recent: maybe still executing
    flow.clock.advance(31)
    settled = {d.id: d.state for d in await flow.service.reconcile()}
    assert settled == {lost.id: "executed", done.id: "executed"}
    assert await balance(flow.db, "VB000000001001") == 100_000 - 700  # each once


async def test_http_backend_is_audited_by_the_service(bank: Bank, make_user) -> None:  # type: ignore[no-untyped-def]
    core = Core()
    runner, url = await serve(core)
    backend = HttpBackend(url, timeout_s=0.5, attempts=2, backoff_s=0.01)
    try:
        agent = await make_user("agent-h", Role.AGENT)
        alice = Caller(bank.customers["alice"], Role.CUSTOMER)
        service = TradingService(bank.db, backend)
        cid = await open_contact(bank.db, alice.user_id, agent, datetime.now(UTC))
        draft = await service.draft(Caller(agent, Role.AGENT), cid, own(700))
        done = await service.confirm(alice, cid, draft.id, draft.hashes["en"])
        assert done.state == "executed" and done.reference == "CORE-1"
        assert core.posts == [draft.id]
        assert "transaction.executed" in await events(bank.db, "transaction.")
    finally:
        await backend.close()
        await runner.cleanup()
