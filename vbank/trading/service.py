"""Drafts, confirmations and execution: the collaborative transaction flow.

The agent drafts an operation in a verified session; the customer sees the rendered card
and confirms (binding the hash of the card they saw) or rejects; the agent can withdraw a
pending draft and drafts expire.  A confirmation that counts moves the draft to
``confirmed`` and the trading backend executes it with the draft id as idempotency key: a
retried confirm finds the draft decided and never executes twice.

Every write is a unit of the database's group-commit writer (:mod:`vbank.writer`), so
drafts and confirmations that arrive together share a transaction and a commit.  With the
built-in ledger the confirmation, the posting and the outcome are one unit (atomic); with
a remote core system the draft is marked ``confirmed`` first, the call goes out, and the
outcome is recorded after it.  A crash or an unknown outcome in between is repaired by
:meth:`TradingService.reconcile`, which asks the backend for the key's status (executing
again under the same key is safe).

Nothing here knows about websockets: callers get :class:`DraftView` results.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audit.log import SYSTEM, Actor, NewEvent
from vbank.config import Settings
from vbank.contact.models import Contact
from vbank.contact.service import Caller
from vbank.db import Database
from vbank.db import utc as _utc
from vbank.roles import Role
from vbank.trading.backend import BackendUnavailable, Execution, TradingBackend
from vbank.trading.drafts import TradeDraft
from vbank.trading.http_adapter import HttpBackend
from vbank.trading.ledger import LedgerBackend, accounts_of, accounts_of_sync
from vbank.trading.operations import (
    LANGS,
    AccountView,
    LimitChange,
    Operation,
    OperationError,
    card_hash,
    check,
    parse_operation,
    render,
)
from vbank.trading.rules import Policy, check_can_draft, check_confirmation, refuse
from vbank.writer import defer_audit

logger = logging.getLogger(__name__)

MAX_PENDING_PER_CONTACT = 10
RECONCILE_AFTER_S = 30.0


@dataclass(frozen=True)
class DraftView:
    """A draft as both parties see it."""

    id: str
    contact_id: str
    customer_id: int
    agent_id: int
    kind: str
    cards: Mapping[str, Mapping[str, Any]]
    hashes: Mapping[str, str]
    step_up: bool
    state: str
    reason: str | None
    reference: str | None
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, row: TradeDraft) -> DraftView:
        return cls(
            id=row.id,
            contact_id=row.contact_id,
            customer_id=row.customer_id,
            agent_id=row.agent_id,
            kind=row.kind,
            cards=json.loads(row.cards),
            hashes={"en": row.card_hash_en, "zh-CN": row.card_hash_zh},
            step_up=row.step_up,
            state=row.state,
            reason=row.reason,
            reference=row.reference,
            created_at=_utc(row.created_at),
            expires_at=_utc(row.expires_at),
        )


class TradeRefused(OperationError):
    """A confirmation that does not count (yet); ``draft`` is the draft as it now stands."""

    def __init__(self, error: OperationError, draft: DraftView | None) -> None:
        super().__init__(error.reason, error.message)
        self.draft = draft


@dataclass(frozen=True)
class _Confirmed:
    """What a confirmation unit decided: refused (with the draft as it stands), executed
    in the same unit (ledger), or confirmed and waiting for a remote execution."""

    view: DraftView
    refusal: OperationError | None = None
    operation: Operation | None = None


def _amount(op: Operation) -> int:
    return op.new_daily_limit_minor if isinstance(op, LimitChange) else op.amount_minor


def _audit(session: Session, row: TradeDraft, type_: str, actor: Actor, **extra: Any) -> None:
    payload = {"draft_id": row.id, "state": row.state}
    payload.update({k: v for k, v in extra.items() if v is not None})
    defer_audit(session, NewEvent(type_, payload, actor, row.contact_id))


def _contact(session: Session, caller: Caller, contact_id: str) -> Contact:
    contact = session.get(Contact, contact_id)
    mine = contact is not None and (
        contact.agent_id == caller.user_id
        if caller.role is Role.AGENT
        else contact.customer_id == caller.user_id
    )
    if contact is None or not mine:
        raise OperationError("not_found", "no such contact")
    if contact.state != "assigned":
        raise refuse("contact_closed")
    return contact


def _draft(session: Session, caller: Caller, contact_id: str, draft_id: str) -> TradeDraft:
    row = session.scalar(select(TradeDraft).where(TradeDraft.id == draft_id).with_for_update())
    owner = row is not None and (
        row.agent_id == caller.user_id
        if caller.role is Role.AGENT
        else row.customer_id == caller.user_id
    )
    if row is None or not owner or row.contact_id != contact_id:
        raise OperationError("not_found", "no such draft")
    return row


class TradingService:
    def __init__(
        self,
        db: Database,
        backend: TradingBackend,
        policy: Policy | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.backend = backend
        self.policy = policy or Policy()
        self.clock = clock
        # the built-in ledger on our own database posts inside the confirmation's unit
        self._ledger = backend if isinstance(backend, LedgerBackend) and backend.db is db else None

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> TradingService:
        """The embedded ledger, or the HTTP adapter for a bank's core system."""
        backend: TradingBackend
        if settings.trading_backend == "http":
            backend = HttpBackend(settings.trading_url)
        else:
            backend = LedgerBackend(db)
        policy = Policy(
            draft_ttl_s=settings.trade_draft_ttl_s,
            verification_max_age_s=settings.verification_max_age_s,
            step_up_limit_minor=settings.step_up_limit_minor,
        )
        return cls(db, backend, policy)

    async def close(self) -> None:
        await self.backend.close()

    # ------------------------------------------------------------------ reads

    async def accounts(self, caller: Caller, contact_id: str | None = None) -> list[AccountView]:
        """A customer's own accounts; an agent sees them only in a verified session."""
        async with self.db.sessions() as session:
            if caller.role is Role.CUSTOMER:
                return await accounts_of(session, caller.user_id)
            contact = await session.get(Contact, contact_id) if contact_id else None
            if contact is None or contact.agent_id != caller.user_id:
                raise OperationError("not_found", "no such contact")
            if contact.state != "assigned":
                raise refuse("contact_closed")
            check_can_draft(contact.verified_at, self.clock(), self.policy)
            return await accounts_of(session, contact.customer_id)

    async def drafts(self, caller: Caller, contact_id: str) -> list[DraftView]:
        """The contact's drafts, oldest first (for a page reload or reconnect)."""
        async with self.db.sessions() as session:
            contact = await session.get(Contact, contact_id)
            mine = contact is not None and caller.user_id in (
                contact.agent_id,
                contact.customer_id,
            )
            if contact is None or not mine:
                raise OperationError("not_found", "no such contact")
            rows = await session.scalars(
                select(TradeDraft)
                .where(TradeDraft.contact_id == contact_id)
                .order_by(TradeDraft.created_at)
            )
            return [DraftView.of(r) for r in rows]

    # ------------------------------------------------------------------ agent

    async def draft(self, caller: Caller, contact_id: str, data: Mapping[str, Any]) -> DraftView:
        """Validate, render both cards and store a pending draft."""
        op = parse_operation(data)
        return await self.db.writer.run(lambda s: self._create(s, caller, contact_id, op))

    def _create(
        self, session: Session, caller: Caller, contact_id: str, op: Operation
    ) -> DraftView:
        now = self.clock()
        contact = _contact(session, caller, contact_id)
        check_can_draft(contact.verified_at, now, self.policy)
        pending = session.scalar(
            select(func.count()).where(
                TradeDraft.contact_id == contact_id, TradeDraft.state == "pending"
            )
        )
        if (pending or 0) >= MAX_PENDING_PER_CONTACT:
            raise OperationError(
                "too_many_drafts",
                f"at most {MAX_PENDING_PER_CONTACT} drafts may wait for the customer",
            )
        accounts = accounts_of_sync(session, contact.customer_id)
        check(op, accounts)
        cards = {lang: render(op, accounts, lang) for lang in LANGS}
        hashes = {lang: card_hash(card) for lang, card in cards.items()}
        amount = _amount(op)
        row = TradeDraft(
            id="d" + uuid.uuid4().hex,
            contact_id=contact_id,
            customer_id=contact.customer_id,
            agent_id=caller.user_id,
            kind=op.kind,
            operation=json.dumps(op.model_dump(mode="json"), sort_keys=True),
            amount_minor=amount,
            currency=op.currency,
            cards=json.dumps(cards, sort_keys=True, ensure_ascii=False),
            card_hash_en=hashes["en"],
            card_hash_zh=hashes["zh-CN"],
            step_up=self.policy.needs_step_up(amount),
            state="pending",
            created_at=now,
            expires_at=now + timedelta(seconds=self.policy.draft_ttl_s),
        )
        session.add(row)
        session.flush()
        _audit(
            session,
            row,
            "trade.drafted",
            caller.actor,
            kind=op.kind,
            amount_minor=amount,
            currency=op.currency,
            card_hashes=hashes,
            step_up=row.step_up,
            expires_at=row.expires_at.isoformat(),
        )
        return DraftView.of(row)

    async def withdraw(self, caller: Caller, contact_id: str, draft_id: str) -> DraftView:
        return await self._end(caller, contact_id, draft_id, "withdrawn", None)

    # ------------------------------------------------------------------ customer

    async def reject(
        self, caller: Caller, contact_id: str, draft_id: str, reason: str | None = None
    ) -> DraftView:
        return await self._end(caller, contact_id, draft_id, "rejected", reason)

    async def _end(
        self, caller: Caller, contact_id: str, draft_id: str, state: str, reason: str | None
    ) -> DraftView:
        def unit(session: Session) -> DraftView | TradeRefused:
            _contact(session, caller, contact_id)
            row = _draft(session, caller, contact_id, draft_id)
            if row.state != "pending":
                return TradeRefused(refuse("already_decided"), DraftView.of(row))
            self._set(row, state, None)  # a party's free text stays in the audit event only
            _audit(session, row, f"trade.{state}", caller.actor, reason=reason)
            return DraftView.of(row)

        result = await self.db.writer.run(unit)
        if isinstance(result, TradeRefused):
            raise result
        return result

    async def confirm(
        self, caller: Caller, contact_id: str, draft_id: str, confirmed_hash: str
    ) -> DraftView:
        """The customer's explicit confirmation of the card with ``confirmed_hash``.

        Raises :class:`TradeRefused` (with the draft as it now stands) when it does not
        count; refusals are audited too.  On success the backend executes the operation."""
        done = await self.db.writer.run(
            lambda s: self._confirm(s, caller, contact_id, draft_id, confirmed_hash)
        )
        if done.refusal is not None:
            raise TradeRefused(done.refusal, done.view)
        if done.operation is None:
            return done.view  # executed (or failed) by the ledger in the same unit
        return await self._execute(done.view, done.operation, confirmed_hash)

    def _confirm(
        self, session: Session, caller: Caller, contact_id: str, draft_id: str, hash_: str
    ) -> _Confirmed:
        contact = _contact(session, caller, contact_id)
        row = _draft(session, caller, contact_id, draft_id)
        now = self.clock()
        langs = {row.card_hash_en: "en", row.card_hash_zh: "zh-CN"}
        try:
            check_confirmation(
                state=row.state,
                now=now,
                expires_at=_utc(row.expires_at),
                drafted_at=_utc(row.created_at),
                step_up=row.step_up,
                verified_at=_utc(contact.verified_at) if contact.verified_at else None,
                policy=self.policy,
            )
            if hash_ not in langs:
                raise refuse("card_mismatch")
        except OperationError as exc:
            if exc.reason == "draft_expired":
                self._set(row, "expired", "draft_expired")
                _audit(session, row, "trade.expired", SYSTEM)
            elif exc.reason != "already_decided":
                row.reason = exc.reason  # the agent sees what is missing
                _audit(session, row, "trade.refused", caller.actor, reason=exc.reason)
            return _Confirmed(DraftView.of(row), refusal=exc)
        self._set(row, "confirmed", None)
        row.confirmed_hash = hash_
        _audit(session, row, "trade.confirmed", caller.actor, card_hash=hash_, lang=langs[hash_])
        op = parse_operation(json.loads(row.operation))
        if self._ledger is None:
            return _Confirmed(DraftView.of(row), operation=op)
        try:
            with session.begin_nested():
                result = self._ledger.post(
                    session,
                    op,
                    row.id,
                    customer_id=row.customer_id,
                    card_hash=hash_,
                    actor_id=row.agent_id,
                    session_ref=row.contact_id,
                )
        except OperationError as exc:
            self._record(session, row, "failed", exc.reason)
        else:
            self._record(session, row, "executed", None, result)
        return _Confirmed(DraftView.of(row))

    # ------------------------------------------------------------------ remote execution

    async def _execute(self, view: DraftView, op: Operation, confirmed_hash: str) -> DraftView:
        try:
            result = await self.backend.execute(
                op,
                view.id,
                customer_id=view.customer_id,
                card_hash=confirmed_hash,
                actor_id=view.agent_id,
                session_ref=view.contact_id,
            )
        except OperationError as exc:
            return await self._settle(view.id, "failed", exc.reason)
        except BackendUnavailable:
            logger.warning("trading backend unavailable for draft %s", view.id)
            return await self._settle(view.id, "pending", "backend_unavailable")
        return await self._settled(view.id, result)

    async def _settled(self, draft_id: str, result: Execution) -> DraftView:
        if result.state == "executed":
            return await self._settle(draft_id, "executed", None, result)
        return await self._settle(draft_id, "status_unknown", "status_unknown")

    async def _settle(
        self, draft_id: str, state: str, reason: str | None, result: Execution | None = None
    ) -> DraftView:
        def unit(session: Session) -> DraftView:
            row = session.scalar(
                select(TradeDraft).where(TradeDraft.id == draft_id).with_for_update()
            )
            assert row is not None
            if row.state not in ("executed", "failed"):  # else a reconcile settled it first
                self._record(session, row, state, reason, result)
            return DraftView.of(row)

        return await self.db.writer.run(unit)

    def _record(
        self,
        session: Session,
        row: TradeDraft,
        state: str,
        reason: str | None,
        result: Execution | None = None,
    ) -> None:
        """The outcome of an execution on the draft, with its audit events."""
        self._set(row, state, reason)
        reference = None
        if result is not None:
            row.reference = reference = result.reference[:64]
            if not self.backend.audits_executions:
                defer_audit(
                    session,
                    NewEvent(
                        "transaction.executed",
                        {
                            "idempotency_key": row.id,
                            "reference": reference,
                            "kind": row.kind,
                            "customer_id": row.customer_id,
                            "amount_minor": row.amount_minor,
                            "currency": row.currency,
                            "card_hash": row.confirmed_hash,
                        },
                        Actor(row.agent_id, "agent"),
                        row.contact_id,
                    ),
                )
        event = "trade.retry_allowed" if state == "pending" else f"trade.{state}"
        _audit(session, row, event, SYSTEM, reason=reason, reference=reference)

    # ------------------------------------------------------------------ housekeeping

    async def expire_due(self) -> list[DraftView]:
        """Expire pending drafts past their time (run by the service's ticker)."""

        def unit(session: Session) -> list[DraftView]:
            rows = session.scalars(
                select(TradeDraft)
                .where(TradeDraft.state == "pending", TradeDraft.expires_at <= self.clock())
                .with_for_update()
            ).all()
            for row in rows:
                self._set(row, "expired", "draft_expired")
                _audit(session, row, "trade.expired", SYSTEM)
            return [DraftView.of(r) for r in rows]

        return await self.db.writer.run(unit)

    async def contact_ended(self, contact_id: str, reason: str) -> list[DraftView]:
        """A closed or transferred contact withdraws its pending drafts."""

        def unit(session: Session) -> list[DraftView]:
            rows = session.scalars(
                select(TradeDraft)
                .where(TradeDraft.contact_id == contact_id, TradeDraft.state == "pending")
                .with_for_update()
            ).all()
            for row in rows:
                self._set(row, "withdrawn", reason)
                _audit(session, row, "trade.withdrawn", SYSTEM, reason=reason)
            return [DraftView.of(r) for r in rows]

        return await self.db.writer.run(unit)

    async def reconcile(self, older_than_s: float = RECONCILE_AFTER_S) -> list[DraftView]:
        """Settle drafts left ``confirmed`` (a crash mid-execution) or ``status_unknown``
        by asking the backend; a confirmed key the backend never saw executes now (same
        idempotency key, so at most once)."""
        cutoff = self.clock() - timedelta(seconds=older_than_s)
        async with self.db.sessions() as session:
            rows = list(
                await session.scalars(
                    select(TradeDraft).where(
                        TradeDraft.state.in_(("confirmed", "status_unknown")),
                        TradeDraft.decided_at <= cutoff,
                    )
                )
            )
        settled: list[DraftView] = []
        for row in rows:
            done = await self.backend.status(row.id)
            if done is not None:
                settled.append(await self._settled(row.id, done))
            elif row.state == "confirmed":
                op = parse_operation(json.loads(row.operation))
                settled.append(await self._execute(DraftView.of(row), op, row.confirmed_hash or ""))
        return settled

    # ------------------------------------------------------------------ helpers

    def _set(self, row: TradeDraft, state: str, reason: str | None) -> None:
        row.state = state
        row.reason = reason
        if state != "pending":
            row.decided_at = self.clock()
