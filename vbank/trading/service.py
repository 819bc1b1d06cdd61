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
from typing import Any, cast

from sqlalchemy import RowMapping, Table, bindparam, func, insert, select, update
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
from vbank.trading.ledger import LedgerBackend, Posting, accounts_by_owner, accounts_of
from vbank.trading.operations import (
    LANGS,
    AccountView,
    Operation,
    OperationError,
    amount_of,
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
    def of(
        cls, row: Mapping[str, Any] | RowMapping, cards: Mapping[str, Any] | None = None
    ) -> DraftView:
        """From a ``trade_drafts`` row as a mapping (Core results, the writer's dicts);
        ``cards`` saves decoding them again when the caller has them."""
        return cls(
            id=row["id"],
            contact_id=row["contact_id"],
            customer_id=row["customer_id"],
            agent_id=row["agent_id"],
            kind=row["kind"],
            cards=cards if cards is not None else json.loads(row["cards"]),
            hashes={"en": row["card_hash_en"], "zh-CN": row["card_hash_zh"]},
            step_up=row["step_up"],
            state=row["state"],
            reason=row["reason"],
            reference=row["reference"],
            created_at=_utc(row["created_at"]),
            expires_at=_utc(row["expires_at"]),
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


Draft = dict[str, Any]  # a trade_drafts row being worked on inside a writer unit
_DRAFTS = cast(Table, TradeDraft.__table__)
_CONTACTS = cast(Table, Contact.__table__)

# Statements of the hot path are built once: SQLAlchemy memoises their cache keys, and
# running them on the unit's connection skips the ORM execution layer.  Units handle all
# the drafts or confirmations of a batch with one statement per step.
_CONTACTS_Q = select(
    _CONTACTS.c.id,
    _CONTACTS.c.customer_id,
    _CONTACTS.c.agent_id,
    _CONTACTS.c.state,
    _CONTACTS.c.verified_at,
).where(_CONTACTS.c.id.in_(bindparam("ids", expanding=True)))
_DRAFTS_Q = (
    select(_DRAFTS)
    .where(_DRAFTS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_DRAFTS.c.id)
    .with_for_update()
)
_PENDING_Q = (
    select(_DRAFTS.c.contact_id, func.count())
    .where(_DRAFTS.c.contact_id.in_(bindparam("ids", expanding=True)), _DRAFTS.c.state == "pending")
    .group_by(_DRAFTS.c.contact_id)
)
_INSERT_DRAFTS = insert(_DRAFTS)
_UPDATE_DRAFTS = (
    update(_DRAFTS)
    .where(_DRAFTS.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        reason=bindparam("b_reason"),
        decided_at=bindparam("b_decided_at"),
        confirmed_hash=bindparam("b_confirmed_hash"),
        reference=bindparam("b_reference"),
    )
)
_CHANGED = ("state", "reason", "decided_at", "confirmed_hash", "reference")


def _audit(session: Session, row: Draft, type_: str, actor: Actor, **extra: Any) -> None:
    payload = {"draft_id": row["id"], "state": row["state"]}
    payload.update({k: v for k, v in extra.items() if v is not None})
    defer_audit(session, NewEvent(type_, payload, actor, row["contact_id"]))


def _contacts(session: Session, ids: set[str]) -> dict[str, Any]:
    rows = session.connection().execute(_CONTACTS_Q, {"ids": sorted(ids)})
    return {r.id: r for r in rows}


def _drafts(session: Session, ids: set[str]) -> dict[str, Draft]:
    rows = session.connection().execute(_DRAFTS_Q, {"ids": sorted(ids)}).mappings()
    return {r["id"]: dict(r) for r in rows}


def _mine(contact: Any, caller: Caller) -> Any:
    """The contact if ``caller`` takes part in it and it is active; refusals otherwise."""
    ok = contact is not None and (
        contact.agent_id == caller.user_id
        if caller.role is Role.AGENT
        else contact.customer_id == caller.user_id
    )
    if not ok:
        raise OperationError("not_found", "no such contact")
    if contact.state != "assigned":
        raise refuse("contact_closed")
    return contact


def _owned(row: Draft | None, caller: Caller, contact_id: str) -> Draft:
    ok = row is not None and (
        row["agent_id"] == caller.user_id
        if caller.role is Role.AGENT
        else row["customer_id"] == caller.user_id
    )
    if row is None or not ok or row["contact_id"] != contact_id:
        raise OperationError("not_found", "no such draft")
    return row


def _flush(session: Session, rows: list[Draft]) -> None:
    """Write the changed columns of ``rows`` back in one statement."""
    if rows:
        session.connection().execute(
            _UPDATE_DRAFTS, [{"b_id": r["id"], **{f"b_{c}": r[c] for c in _CHANGED}} for r in rows]
        )


@dataclass(frozen=True)
class _NewDraft:
    caller: Caller
    contact_id: str
    op: Operation


@dataclass(frozen=True)
class _Decision:
    """A party's decision on a draft: confirm (with the card hash), reject or withdraw."""

    caller: Caller
    contact_id: str
    draft_id: str
    action: str  # "confirm" | "rejected" | "withdrawn"
    card_hash: str = ""
    reason: str | None = None


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
        async with self.db.reads() as session:
            if caller.role is Role.CUSTOMER:
                return await accounts_of(session, caller.user_id)
            contact = _mine(await session.get(Contact, contact_id) if contact_id else None, caller)
            check_can_draft(contact.verified_at, self.clock(), self.policy)
            return await accounts_of(session, contact.customer_id)

    async def drafts(self, caller: Caller, contact_id: str) -> list[DraftView]:
        """The contact's drafts, oldest first (for a page reload or reconnect)."""
        async with self.db.reads() as session:
            contact = await session.get(Contact, contact_id)
            mine = contact is not None and caller.user_id in (
                contact.agent_id,
                contact.customer_id,
            )
            if contact is None or not mine:
                raise OperationError("not_found", "no such contact")
            rows = await session.execute(
                select(_DRAFTS)
                .where(_DRAFTS.c.contact_id == contact_id)
                .order_by(_DRAFTS.c.created_at)
            )
            return [DraftView.of(r) for r in rows.mappings()]

    # ------------------------------------------------------------------ agent

    async def draft(self, caller: Caller, contact_id: str, data: Mapping[str, Any]) -> DraftView:
        """Validate, render both cards and store a pending draft."""
        op = parse_operation(data)
        view: DraftView = await self.db.writer.run_bulk(
            self._create_many, _NewDraft(caller, contact_id, op)
        )
        return view

    def _create_many(
        self, session: Session, items: list[_NewDraft]
    ) -> list[DraftView | OperationError]:
        now = self.clock()
        contacts = _contacts(session, {it.contact_id for it in items})
        pending: dict[str, int] = {
            cid: int(n)
            for cid, n in session.connection().execute(_PENDING_Q, {"ids": sorted(contacts)})
        }
        accounts = accounts_by_owner(session, sorted({c.customer_id for c in contacts.values()}))
        rows: list[Draft] = []
        out: list[DraftView | OperationError] = []
        for it in items:
            try:
                contact = _mine(contacts.get(it.contact_id), it.caller)
                check_can_draft(contact.verified_at, now, self.policy)
                if pending.get(it.contact_id, 0) >= MAX_PENDING_PER_CONTACT:
                    raise OperationError(
                        "too_many_drafts",
                        f"at most {MAX_PENDING_PER_CONTACT} drafts may wait for the customer",
                    )
                row, cards = self._new_row(it, contact, accounts[contact.customer_id], now)
            except OperationError as exc:
                out.append(exc)
                continue
            pending[it.contact_id] = pending.get(it.contact_id, 0) + 1
            rows.append(row)
            out.append(DraftView.of(row, cards))
            _audit(
                session,
                row,
                "trade.drafted",
                it.caller.actor,
                kind=row["kind"],
                amount_minor=row["amount_minor"],
                currency=row["currency"],
                card_hashes={"en": row["card_hash_en"], "zh-CN": row["card_hash_zh"]},
                step_up=row["step_up"],
                expires_at=row["expires_at"].isoformat(),
            )
        if rows:
            session.connection().execute(_INSERT_DRAFTS, rows)
        return out

    def _new_row(
        self, it: _NewDraft, contact: Any, accounts: list[AccountView], now: datetime
    ) -> tuple[Draft, dict[str, Any]]:
        check(it.op, accounts)
        cards: dict[str, Any] = {lang: render(it.op, accounts, lang) for lang in LANGS}
        hashes = {lang: card_hash(card) for lang, card in cards.items()}
        amount = amount_of(it.op)
        row = {
            "id": "d" + uuid.uuid4().hex,
            "contact_id": it.contact_id,
            "customer_id": contact.customer_id,
            "agent_id": it.caller.user_id,
            "kind": it.op.kind,
            "operation": json.dumps(it.op.model_dump(mode="json"), sort_keys=True),
            "amount_minor": amount,
            "currency": it.op.currency,
            "cards": json.dumps(cards, sort_keys=True, ensure_ascii=False),
            "card_hash_en": hashes["en"],
            "card_hash_zh": hashes["zh-CN"],
            "step_up": self.policy.needs_step_up(amount),
            "state": "pending",
            "reason": None,
            "confirmed_hash": None,
            "reference": None,
            "created_at": now,
            "expires_at": now + timedelta(seconds=self.policy.draft_ttl_s),
            "decided_at": None,
        }
        return row, cards

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
        decided = await self.db.writer.run_bulk(
            self._decide_many, _Decision(caller, contact_id, draft_id, state, reason=reason)
        )
        assert isinstance(decided, _Confirmed)
        if decided.refusal is not None:
            raise TradeRefused(decided.refusal, decided.view)
        return decided.view

    async def confirm(
        self, caller: Caller, contact_id: str, draft_id: str, confirmed_hash: str
    ) -> DraftView:
        """The customer's explicit confirmation of the card with ``confirmed_hash``.

        Raises :class:`TradeRefused` (with the draft as it now stands) when it does not
        count; refusals are audited too.  On success the backend executes the operation."""
        done = await self.db.writer.run_bulk(
            self._decide_many,
            _Decision(caller, contact_id, draft_id, "confirm", card_hash=confirmed_hash),
        )
        assert isinstance(done, _Confirmed)
        if done.refusal is not None:
            raise TradeRefused(done.refusal, done.view)
        if done.operation is None:
            return done.view  # executed (or failed) by the ledger in the same unit
        return await self._execute(done.view, done.operation, confirmed_hash)

    def _decide_many(
        self, session: Session, items: list[_Decision]
    ) -> list[_Confirmed | OperationError]:
        """Confirmations, rejections and withdrawals of one batch: drafts and contacts
        read (and drafts locked) once, the ledger's postings done together, the drafts'
        new states written in one statement."""
        now = self.clock()
        contacts = _contacts(session, {it.contact_id for it in items})
        drafts = _drafts(session, {it.draft_id for it in items})
        out: list[_Confirmed | OperationError] = []
        changed: dict[str, Draft] = {}
        postings: list[tuple[int, Draft, Posting]] = []
        for it in items:
            try:
                contact = _mine(contacts.get(it.contact_id), it.caller)
                row = _owned(drafts.get(it.draft_id), it.caller, it.contact_id)
            except OperationError as exc:
                out.append(exc)
                continue
            if it.action != "confirm":
                out.append(self._party_ends(session, it, row, changed))
                continue
            decided = self._confirm_one(session, it, contact, row, now, changed)
            if isinstance(decided, Posting):
                postings.append((len(out), row, decided))
                out.append(_Confirmed(DraftView.of(row)))  # replaced once posted
            else:
                out.append(decided)
        if postings:
            assert self._ledger is not None
            results = self._ledger.post_many(session, [posting for _, _, posting in postings])
            for (index, row, _), result in zip(postings, results, strict=True):
                if isinstance(result, OperationError):
                    self._record(session, row, "failed", result.reason)
                else:
                    self._record(session, row, "executed", None, result)
                out[index] = _Confirmed(DraftView.of(row))
        _flush(session, list(changed.values()))
        return out

    def _party_ends(
        self, session: Session, it: _Decision, row: Draft, changed: dict[str, Draft]
    ) -> _Confirmed:
        if row["state"] != "pending":
            return _Confirmed(DraftView.of(row), refusal=refuse("already_decided"))
        self._set(row, it.action, None)  # a party's free text stays in the audit event only
        changed[row["id"]] = row
        _audit(session, row, f"trade.{it.action}", it.caller.actor, reason=it.reason)
        return _Confirmed(DraftView.of(row))

    def _confirm_one(
        self,
        session: Session,
        it: _Decision,
        contact: Any,
        row: Draft,
        now: datetime,
        changed: dict[str, Draft],
    ) -> _Confirmed | Posting:
        langs = {row["card_hash_en"]: "en", row["card_hash_zh"]: "zh-CN"}
        try:
            check_confirmation(
                state=row["state"],
                now=now,
                expires_at=_utc(row["expires_at"]),
                drafted_at=_utc(row["created_at"]),
                step_up=row["step_up"],
                verified_at=_utc(contact.verified_at) if contact.verified_at else None,
                policy=self.policy,
            )
            if it.card_hash not in langs:
                raise refuse("card_mismatch")
        except OperationError as exc:
            if exc.reason == "draft_expired":
                self._set(row, "expired", "draft_expired")
                changed[row["id"]] = row
                _audit(session, row, "trade.expired", SYSTEM)
            elif exc.reason != "already_decided":
                row["reason"] = exc.reason  # the agent sees what is missing
                changed[row["id"]] = row
                _audit(session, row, "trade.refused", it.caller.actor, reason=exc.reason)
            return _Confirmed(DraftView.of(row), refusal=exc)
        self._set(row, "confirmed", None, confirmed_hash=it.card_hash)
        changed[row["id"]] = row
        _audit(
            session,
            row,
            "trade.confirmed",
            it.caller.actor,
            card_hash=it.card_hash,
            lang=langs[it.card_hash],
        )
        op = parse_operation(json.loads(row["operation"]))
        if self._ledger is None:
            return _Confirmed(DraftView.of(row), operation=op)
        # the built-in ledger posts in this same transaction (see _decide_many)
        return Posting(
            op,
            row["id"],
            row["customer_id"],
            card_hash=it.card_hash,
            actor_id=row["agent_id"],
            session_ref=row["contact_id"],
            fresh_key=True,
        )

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
            row = _drafts(session, {draft_id})[draft_id]
            if row["state"] not in ("executed", "failed"):  # else a reconcile settled it
                self._record(session, row, state, reason, result)
                _flush(session, [row])
            return DraftView.of(row)

        return await self.db.writer.run(unit)

    def _record(
        self,
        session: Session,
        row: Draft,
        state: str,
        reason: str | None,
        result: Execution | None = None,
    ) -> None:
        """The outcome of an execution on the draft, with its audit events."""
        reference = result.reference[:64] if result is not None else None
        self._set(row, state, reason)
        if reference is not None:
            row["reference"] = reference
        if result is not None and not self.backend.audits_executions:
            defer_audit(
                session,
                NewEvent(
                    "transaction.executed",
                    {
                        "idempotency_key": row["id"],
                        "reference": reference,
                        "kind": row["kind"],
                        "customer_id": row["customer_id"],
                        "amount_minor": row["amount_minor"],
                        "currency": row["currency"],
                        "card_hash": row["confirmed_hash"],
                    },
                    Actor(row["agent_id"], "agent"),
                    row["contact_id"],
                ),
            )
        event = "trade.retry_allowed" if state == "pending" else f"trade.{state}"
        _audit(session, row, event, SYSTEM, reason=reason, reference=reference)

    # ------------------------------------------------------------------ housekeeping

    async def expire_due(self) -> list[DraftView]:
        """Expire pending drafts past their time (run by the service's ticker every second:
        a plain read on the read-only connection first, so an idle tick takes no lock)."""
        now = self.clock()
        async with self.db.reads() as session:
            due = await session.scalar(
                select(_DRAFTS.c.id)
                .where(_DRAFTS.c.state == "pending", _DRAFTS.c.expires_at <= now)
                .limit(1)
            )
        if due is None:
            return []

        def unit(session: Session) -> list[DraftView]:
            rows = _pending(session, _DRAFTS.c.expires_at <= now)
            for row in rows:
                self._set(row, "expired", "draft_expired")
                _audit(session, row, "trade.expired", SYSTEM)
            _flush(session, rows)
            return [DraftView.of(r) for r in rows]

        return await self.db.writer.run(unit)

    async def contact_ended(self, contact_id: str, reason: str) -> list[DraftView]:
        """A closed or transferred contact withdraws its pending drafts."""

        def unit(session: Session) -> list[DraftView]:
            rows = _pending(session, _DRAFTS.c.contact_id == contact_id)
            for row in rows:
                self._set(row, "withdrawn", reason)
                _audit(session, row, "trade.withdrawn", SYSTEM, reason=reason)
            _flush(session, rows)
            return [DraftView.of(r) for r in rows]

        return await self.db.writer.run(unit)

    async def reconcile(self, older_than_s: float = RECONCILE_AFTER_S) -> list[DraftView]:
        """Settle drafts left ``confirmed`` (a crash mid-execution) or ``status_unknown``
        by asking the backend; a confirmed key the backend never saw executes now (same
        idempotency key, so at most once)."""
        cutoff = self.clock() - timedelta(seconds=older_than_s)
        async with self.db.reads() as session:
            rows = (
                await session.execute(
                    select(_DRAFTS).where(
                        _DRAFTS.c.state.in_(("confirmed", "status_unknown")),
                        _DRAFTS.c.decided_at <= cutoff,
                    )
                )
            ).mappings()
        settled: list[DraftView] = []
        for row in rows:
            done = await self.backend.status(row["id"])
            if done is not None:
                settled.append(await self._settled(row["id"], done))
            elif row["state"] == "confirmed":
                op = parse_operation(json.loads(row["operation"]))
                view = DraftView.of(row)
                settled.append(await self._execute(view, op, row["confirmed_hash"] or ""))
        return settled

    # ------------------------------------------------------------------ helpers

    def _set(self, row: Draft, state: str, reason: str | None, **more: Any) -> None:
        """Change a draft in memory; the unit writes it back with :func:`_flush`."""
        row.update(state=state, reason=reason, **more)
        if state != "pending":
            row["decided_at"] = self.clock()


def _pending(session: Session, condition: Any) -> list[Draft]:
    """Pending drafts matching ``condition``, locked."""
    rows = session.execute(
        select(_DRAFTS).where(_DRAFTS.c.state == "pending", condition).with_for_update()
    ).mappings()
    return [dict(r) for r in rows]
