"""What happens when a websocket message arrives: role checks, the contact service, fan-out.

One :class:`Realtime` per application. The websocket handler parses frames
(``signaling.protocol``) and hands each typed message here with the caller; replies and
notifications leave through the :class:`~signaling.hub.Hub`.  Routing is re-run after every
change that can free an agent or add a contact, and queued customers get their new
position and estimated wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable

from signaling import protocol as p
from signaling.hub import Connection, Hub
from vbank.calls import Calls
from vbank.contact.chat import PostResult
from vbank.contact.models import ChatMessage as StoredMessage
from vbank.contact.service import Caller, ContactError, ContactService, ContactView
from vbank.db import utc
from vbank.roles import Role
from vbank.trading.operations import OperationError
from vbank.trading.service import DraftView, TradeRefused, TradingService
from vbank.verification import Verifier

logger = logging.getLogger(__name__)

CUSTOMER_AGENT = frozenset({Role.CUSTOMER, Role.AGENT})
ALL = frozenset(Role)

#: which roles may send which message type (the rest get ``forbidden``)
MESSAGE_ROLES: dict[str, frozenset[Role]] = {
    "hello": ALL,
    "ping": ALL,
    "contact.start": frozenset({Role.CUSTOMER}),
    "chat.send": CUSTOMER_AGENT,
    "chat.read": CUSTOMER_AGENT,
    "contact.close": CUSTOMER_AGENT,
    "contact.transfer": frozenset({Role.AGENT}),
    "agent.status": frozenset({Role.AGENT}),
    "video.request": CUSTOMER_AGENT,
    "video.consent": frozenset({Role.CUSTOMER}),
    "video.offer": CUSTOMER_AGENT,
    "video.answer": CUSTOMER_AGENT,
    "video.ice": CUSTOMER_AGENT,
    "video.hangup": CUSTOMER_AGENT,
    "verify.start": frozenset({Role.AGENT}),
    "verify.capture_document": frozenset({Role.AGENT}),
    "verify.cancel": frozenset({Role.AGENT}),
    "verify.decide": frozenset({Role.AGENT}),
    "trade.draft": frozenset({Role.AGENT}),
    "trade.withdraw": frozenset({Role.AGENT}),
    "trade.confirm": frozenset({Role.CUSTOMER}),
    "trade.reject": frozenset({Role.CUSTOMER}),
}
assert set(MESSAGE_ROLES) == set(p.CLIENT_MESSAGE_TYPES), "every message type declares roles"

Handler = Callable[[Caller, p.ClientMessage], Awaitable[None]]

#: the connection whose message is being handled: replies (ack, pong, welcome, replay) go
#: to it alone, events go to every connection of the users concerned
_origin: contextvars.ContextVar[Connection] = contextvars.ContextVar("origin")


class Realtime:
    def __init__(
        self,
        contacts: ContactService,
        hub: Hub,
        calls: Calls,
        verifier: Verifier,
        trading: TradingService,
        tick_s: float = 1.0,
    ) -> None:
        self.contacts = contacts
        self.hub = hub
        self.calls = calls
        self.verifier = verifier
        self.trading = trading
        self._ticks = 0
        self.tick_s = tick_s
        self._customer_of: dict[str, int] = {}  # queued contact -> customer
        self._task: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one routing pass at a time
        self._handlers: dict[str, Handler] = {
            "hello": self._hello,
            "ping": self._ping,
            "contact.start": self._start,
            "chat.send": self._chat_send,
            "chat.read": self._chat_read,
            "contact.close": self._close,
            "contact.transfer": self._transfer,
            "agent.status": self._agent_status,
            "video.request": self._video_request,
            "video.consent": self._video_consent,
            "video.offer": self._video_offer,
            "video.answer": self._video_unexpected,
            "video.ice": self._video_ice,
            "video.hangup": self._video_hangup,
            "verify.start": self._verify_start,
            "verify.capture_document": self._verify_capture,
            "verify.cancel": self._verify_cancel,
            "verify.decide": self._verify_decide,
            "trade.draft": self._trade_draft,
            "trade.withdraw": self._trade_withdraw,
            "trade.confirm": self._trade_confirm,
            "trade.reject": self._trade_reject,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.contacts.restore()
        async with self.contacts.db.sessions() as session:
            from sqlalchemy import select

            from vbank.contact.models import Contact

            rows = (
                await session.execute(
                    select(Contact.id, Contact.customer_id).where(Contact.state == "queued")
                )
            ).all()
        self._customer_of.update({cid: cust for cid, cust in rows})
        self._task = asyncio.create_task(self._ticker(), name="vbank-routing-tick")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self.verifier.close()
        await self.trading.close()
        await self.calls.shutdown()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                requeued = await self.contacts.tick()
                if requeued:
                    for view in requeued:
                        self._customer_of[view.id] = view.customer_id
                    await self.route()
            except Exception:
                logger.exception("routing tick failed")
            try:
                await self._trading_tick()
            except Exception:
                logger.exception("trading tick failed")

    async def _trading_tick(self) -> None:
        """Expire drafts every tick; settle interrupted executions every tenth."""
        self._ticks += 1
        for draft in await self.trading.expire_due():
            await self._send_draft(draft)
        if self._ticks % 10 == 0:
            for draft in await self.trading.reconcile():
                await self._send_draft(draft)
                await self._send_balances(draft)

    # ------------------------------------------------------------------ connections

    async def connected(self, caller: Caller, conn: Connection) -> None:
        first = self.hub.add(caller.user_id, conn)
        if caller.role is Role.AGENT and first:
            await self._register_agent(caller.user_id)
            self.contacts.agent_online(caller.user_id)
            await self.route()

    def disconnected(self, caller: Caller, conn: Connection) -> None:
        """Forget a connection. The clean-up runs in its own task: aiohttp may cancel the
        websocket's request task when the client goes away, and a cancelled clean-up would
        leave a call's media running."""
        last = self.hub.remove(caller.user_id, conn)
        if not last:
            return
        if caller.role is Role.AGENT:
            self.contacts.agent_offline(caller.user_id)
        if caller.role in CUSTOMER_AGENT:
            task = asyncio.get_running_loop().create_task(
                self.calls.party_lost(caller.user_id, caller.role)
            )
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _register_agent(self, user_id: int) -> None:
        from vbank.models import AgentProfile

        router = self.contacts.router
        if router.has_agent(str(user_id)):
            return
        async with self.contacts.db.sessions() as session:
            profile = await session.get(AgentProfile, user_id)
        if profile is None:
            return
        skills = profile.skill_set & router.skills
        router.add_agent(str(user_id), skills, capacity=profile.capacity, status="away")

    # ------------------------------------------------------------------ dispatch

    async def handle(self, caller: Caller, message: p.ClientMessage, conn: Connection) -> None:
        """Run one message from ``conn``; raises ProtocolError for its error frame."""
        _origin.set(conn)
        allowed = MESSAGE_ROLES[message.type]
        if caller.role not in allowed:
            raise p.ProtocolError(
                p.ErrorCode.FORBIDDEN,
                f"{caller.role.value} may not send {message.type}",
                ref_id=message.id,
            )
        try:
            await self._handlers[message.type](caller, message)
        except ContactError as exc:
            raise p.ProtocolError(_code(exc.code), exc.message, ref_id=message.id) from None
        except p.ProtocolError as exc:
            if exc.ref_id is None:
                exc.ref_id = message.id
            raise

    async def _reply(self, frame: p.ServerMessage | str) -> None:
        """Send a frame (or its JSON text) to the connection whose message is running."""
        text = frame if isinstance(frame, str) else p.serialize_server_message(frame)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await _origin.get().send_str(text)

    async def _ack(self, caller: Caller, message: p.ClientMessage, **kw: object) -> None:
        """Acknowledge ``message`` if it has an id."""
        if message.id is not None:
            await self._reply(p.Ack(id=message.id, **kw))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ handlers

    async def _ping(self, caller: Caller, message: p.ClientMessage) -> None:
        await self._reply(p.Pong(id=message.id))

    async def _hello(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.Hello)
        await self._reply(p.Welcome(user_id=str(caller.user_id), role=caller.role.value))
        if caller.role not in CUSTOMER_AGENT:
            return
        for view in await self.contacts.open_contacts(caller):
            frame = (await self._status_frames(view)).get(caller.user_id)
            if frame is not None:
                await self._reply(frame)
            after = message.resume.get(view.id, 0)
            for row in await self.contacts.history(caller, view.id, after_seq=after):
                await self._reply(_row_frame(row))
            if view.state == "assigned":
                for draft in await self.trading.drafts(caller, view.id):
                    await self._reply(_card_frame(draft))

    async def _start(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.ContactStart)
        view = await self.contacts.start(caller, message.skill)
        self._customer_of[view.id] = caller.user_id
        await self._ack(caller, message, contact_id=view.id)
        if message.text:
            result = await self.contacts.post(
                caller, view.id, message.client_id or f"start-{view.id}", message.text
            )
            await self._send_chat(result)
        await self.route()

    async def _chat_send(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.ChatSend)
        result = await self.contacts.post(
            caller, message.contact_id, message.client_id, message.text
        )
        if message.id is not None:  # every field is the validated message's or the stored line's
            await self._reply(
                p.chat_ack_json(message.id, result.seq, message.contact_id, utc(result.created_at))
            )
        if not result.duplicate:
            await self._send_chat(result, skip=_origin.get())

    async def _chat_read(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.ChatRead)
        await self.contacts.mark_read(caller, message.contact_id, message.up_to_seq)
        await self._ack(caller, message, contact_id=message.contact_id)

    async def _close(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.ContactClose)
        view = await self.contacts.close_contact(caller, message.contact_id)
        self._customer_of.pop(view.id, None)
        await self.calls.contact_closed(view)
        await self._drafts_ended(view, "contact_closed")
        await self._ack(caller, message, contact_id=view.id)
        frame = p.ContactClosed(contact_id=view.id, reason=caller.role.value)  # type: ignore[arg-type]
        await self.hub.send(view.customer_id, frame)
        await self.hub.send(view.agent_id, frame)
        await self.route()

    async def _transfer(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.ContactTransfer)
        to_agent = None
        if message.to_agent_id is not None:
            if not message.to_agent_id.isdigit():
                raise ContactError("not_found", "no such agent")
            to_agent = int(message.to_agent_id)
        before = await self._view(caller, message.contact_id)
        view = await self.contacts.transfer(
            caller, message.contact_id, to_agent_id=to_agent, to_skill=message.to_skill
        )
        await self._drafts_ended(before, "transferred")
        await self._ack(caller, message, contact_id=view.id)
        if view.state == "queued":
            self._customer_of[view.id] = view.customer_id
        else:
            await self._announce(view)
            await self._replay_to_agent(view)
        await self.route()

    async def _agent_status(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.AgentStatus)
        await self._register_agent(caller.user_id)
        await self.contacts.set_agent_status(caller, message.status, message.capacity)
        await self._ack(caller, message)
        await self.route()

    async def _assigned_view(self, caller: Caller, contact_id: str) -> ContactView:
        view = await self._view(caller, contact_id)
        if view.state != "assigned":
            raise p.ProtocolError(p.ErrorCode.OUT_OF_ORDER, "video needs an assigned contact")
        return view

    async def _video_request(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VideoRequest)
        await self.calls.request(caller, await self._assigned_view(caller, message.contact_id))
        await self._ack(caller, message, contact_id=message.contact_id)

    async def _video_consent(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VideoConsent)
        view = await self._assigned_view(caller, message.contact_id)
        await self.calls.consent(caller, view, message)
        await self._ack(caller, message, contact_id=message.contact_id)

    async def _video_offer(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VideoOffer)
        view = await self._assigned_view(caller, message.contact_id)
        await self.calls.offer(caller, view, message)

    async def _video_hangup(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VideoHangup)
        await self.calls.hangup(caller, await self._assigned_view(caller, message.contact_id))
        await self._ack(caller, message, contact_id=message.contact_id)

    async def _video_ice(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VideoIce)
        await self._view(caller, message.contact_id)  # only a participant may send it
        # Offers are complete (non-trickle): candidates arrive inside the SDP.
        await self._ack(caller, message, contact_id=message.contact_id)

    async def _verify_start(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VerifyStart)
        view = await self._assigned_view(caller, message.contact_id)
        await self.verifier.start(caller, view, message.reference)
        await self._ack(caller, message, contact_id=view.id)

    async def _verify_capture(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VerifyCaptureDocument)
        view = await self._assigned_view(caller, message.contact_id)
        await self.verifier.capture_document(caller, view)
        await self._ack(caller, message, contact_id=view.id)

    async def _verify_cancel(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VerifyCancel)
        view = await self._assigned_view(caller, message.contact_id)
        await self.verifier.cancel(caller, view)
        await self._ack(caller, message, contact_id=view.id)

    async def _verify_decide(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.VerifyDecide)
        view = await self._assigned_view(caller, message.contact_id)
        await self.verifier.decide(
            caller, view, message.attempt_id, message.approve, message.reason
        )
        await self._ack(caller, message, contact_id=view.id)

    async def _trade_draft(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.TradeDraftRequest)
        view = await self._assigned_view(caller, message.contact_id)
        draft = await self._trading(self.trading.draft(caller, view.id, message.operation))
        await self._ack(caller, message, contact_id=view.id)
        await self._send_draft(draft)

    async def _trade_withdraw(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.TradeWithdraw)
        view = await self._assigned_view(caller, message.contact_id)
        draft = await self._trading(self.trading.withdraw(caller, view.id, message.draft_id))
        await self._ack(caller, message, contact_id=view.id)
        await self._send_draft(draft)

    async def _trade_reject(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.TradeReject)
        view = await self._assigned_view(caller, message.contact_id)
        draft = await self._trading(
            self.trading.reject(caller, view.id, message.draft_id, message.reason)
        )
        await self._ack(caller, message, contact_id=view.id)
        await self._send_draft(draft)

    async def _trade_confirm(self, caller: Caller, message: p.ClientMessage) -> None:
        assert isinstance(message, p.TradeConfirm)
        view = await self._assigned_view(caller, message.contact_id)
        draft = await self._trading(
            self.trading.confirm(caller, view.id, message.draft_id, message.card_hash)
        )
        await self._ack(caller, message, contact_id=view.id)
        await self._send_draft(draft)
        await self._send_balances(draft)

    async def _trading(self, call: Awaitable[DraftView]) -> DraftView:
        """Run a trading call; a refusal reaches both parties (the draft as it now stands)
        and the sender as a ``refused`` error naming the rule."""
        try:
            return await call
        except TradeRefused as exc:
            if exc.draft is not None:
                await self._send_draft(exc.draft)
            raise p.ProtocolError(p.ErrorCode.REFUSED, exc.message, reason=exc.reason) from None
        except OperationError as exc:
            if exc.reason == "not_found":
                raise p.ProtocolError(p.ErrorCode.NOT_FOUND, exc.message) from None
            raise p.ProtocolError(p.ErrorCode.REFUSED, exc.message, reason=exc.reason) from None

    async def _send_draft(self, draft: DraftView) -> None:
        frame = _card_frame(draft)
        await self.hub.send(draft.customer_id, frame)
        await self.hub.send(draft.agent_id, frame)

    async def _send_balances(self, draft: DraftView) -> None:
        if draft.state != "executed":
            return
        customer = Caller(draft.customer_id, Role.CUSTOMER)
        accounts = await self.trading.accounts(customer)
        frame = p.AccountsBalances(
            contact_id=draft.contact_id,
            accounts=[
                p.AccountBalance(
                    number=a.number,
                    name=a.name,
                    currency=a.currency,
                    balance_minor=a.balance_minor or 0,
                )
                for a in accounts
            ],
        )
        await self.hub.send(draft.customer_id, frame)
        await self.hub.send(draft.agent_id, frame)

    async def _drafts_ended(self, view: ContactView, reason: str) -> None:
        for draft in await self.trading.contact_ended(view.id, reason):
            await self._send_draft(draft)

    async def _video_unexpected(self, caller: Caller, message: p.ClientMessage) -> None:
        raise p.ProtocolError(
            p.ErrorCode.OUT_OF_ORDER, "the server never sends offers: send video.offer"
        )

    # ------------------------------------------------------------------ routing + fan-out

    async def route(self) -> None:
        """Assign what can be assigned, tell both sides, refresh queue positions."""
        async with self._lock:
            for view in await self.contacts.assign():
                self._customer_of.pop(view.id, None)
                await self._announce(view)
                await self._replay_to_agent(view)
            for contact_id, customer_id in list(self._customer_of.items()):
                pos = self.contacts.queue_position(contact_id)
                if pos is None:
                    continue
                position, wait = pos
                await self.hub.send(
                    customer_id,
                    p.QueuePosition(
                        contact_id=contact_id, position=position, estimated_wait_s=wait
                    ),
                )

    async def _status_frames(self, view: ContactView) -> dict[int, p.ServerMessage]:
        """Where a contact stands, per participant (user id → frame)."""
        if view.state == "queued":
            pos = self.contacts.queue_position(view.id)
            if pos is None:
                return {}
            frame = p.QueuePosition(contact_id=view.id, position=pos[0], estimated_wait_s=pos[1])
            return {view.customer_id: frame}
        if view.agent_id is None:
            return {}
        names = await self.contacts.display_names(view.agent_id, view.customer_id)
        agent_name = names[view.agent_id][:120]
        customer_name = names[view.customer_id][:120]
        agent_id = str(view.agent_id)
        return {
            view.customer_id: p.ContactAssigned(
                contact_id=view.id, skill=view.skill, agent_id=agent_id, agent_name=agent_name
            ),
            view.agent_id: p.ContactAssigned(
                contact_id=view.id,
                skill=view.skill,
                agent_id=agent_id,
                agent_name=agent_name,
                customer_name=customer_name,
            ),
        }

    async def _announce(self, view: ContactView) -> None:
        """Tell the customer (and the agent) where a contact stands."""
        for user_id, frame in (await self._status_frames(view)).items():
            await self.hub.send(user_id, frame)

    async def _replay_to_agent(self, view: ContactView) -> None:
        """A newly assigned agent gets the conversation so far (queued or earlier agents)."""
        if view.agent_id is None:
            return
        agent = Caller(view.agent_id, Role.AGENT)
        for row in await self.contacts.history(agent, view.id):
            await self.hub.send(view.agent_id, _row_frame(row))

    async def _view(self, caller: Caller, contact_id: str) -> ContactView:
        c = await self.contacts.participant(caller, contact_id)
        return ContactView(c.id, c.customer_id, c.agent_id, c.skill, c.state)

    async def _send_chat(self, result: PostResult, *, skip: Connection | None = None) -> None:
        """A stored line to both parties (the writer says who takes part: no second read);
        ``skip`` is the sending connection, which has its ack with the seq and time."""
        text = p.chat_message_json(
            result.contact_id,
            result.seq,
            result.sender_role,
            result.text,
            result.client_id,
            utc(result.created_at),
        )
        await self.hub.send(result.customer_id, text, skip=skip)
        await self.hub.send(result.agent_id, text, skip=skip)


def _row_frame(row: StoredMessage) -> str:
    """A stored line's ``chat.message`` frame as JSON text: built without validating it
    again, as the text, ids and sender were validated when the line was posted."""
    return p.chat_message_json(
        row.contact_id, row.seq, row.sender_role, row.text, row.client_id, utc(row.created_at)
    )


def _card_frame(draft: DraftView) -> p.TradeCard:
    return p.TradeCard(
        contact_id=draft.contact_id,
        draft_id=draft.id,
        kind=draft.kind,
        state=draft.state,  # type: ignore[arg-type]
        step_up=draft.step_up,
        expires_at=draft.expires_at,
        cards={lang: p.Card.model_validate(card) for lang, card in draft.cards.items()},  # type: ignore[misc]
        hashes=dict(draft.hashes),  # type: ignore[arg-type]
        reason=draft.reason,
        reference=draft.reference,
    )


def _code(code: str) -> p.ErrorCode:
    try:
        return p.ErrorCode(code)
    except ValueError:
        return p.ErrorCode.INVALID_MESSAGE
