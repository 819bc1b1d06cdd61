"""Video calls inside a contact: consent, negotiation with our media server, hang-up.

The rules live in the pure state machine (``signaling.state.ContactSession``); this module
executes its effects: frames to both parties, audit events, and the aiortc media session
(``signaling.media``) that relays, records and taps the call. Every way a call can end
(hang-up, decline, ICE failure, a party's websocket lost, the contact closed, shutdown)
goes through :meth:`Calls._stop`, which closes the media and finalises the recordings.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from audit.envelope import EnvelopeError, MasterKeyring
from audit.log import Actor, append
from audit.sealed import SealedFile, seal_file
from signaling import protocol as p
from signaling import state as st
from signaling.hub import Hub
from signaling.media import MediaManager, MediaSession, NegotiationError
from signaling.media.session import MediaStateError
from vbank.contact.service import Caller, ContactView
from vbank.db import Database
from vbank.roles import Role

logger = logging.getLogger(__name__)

CONSENT_VERSION = "2026-11-v1"
CONSENT_TEXT = (
    "To verify your identity and to keep a record of this service, the bank records this "
    "video call (picture and sound) together with the chat. The recording is encrypted, "
    "kept for the legal retention period and only reviewed by authorised staff and auditors. "
    "You can end the video at any time and continue in the chat."
)
CONSENT_TEXT_SHA256 = hashlib.sha256(CONSENT_TEXT.encode()).hexdigest()


def proto_role(role: Role) -> p.Role:
    if role is Role.CUSTOMER:
        return "customer"
    if role is Role.AGENT:
        return "agent"
    raise p.ProtocolError(p.ErrorCode.FORBIDDEN, "only the customer and the agent take part")


class Calls:
    """Video state and media of every open contact."""

    def __init__(
        self,
        db: Database,
        hub: Hub,
        media: MediaManager,
        recordings_dir: Path,
        keyring: MasterKeyring | None = None,
    ) -> None:
        self.db = db
        self.hub = hub
        self.media = media
        self.recordings_dir = recordings_dir
        self.keyring = keyring  # None: recordings stay plaintext (hashed all the same)
        self._sessions: dict[str, st.ContactSession] = {}
        self._views: dict[str, ContactView] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def session(self, view: ContactView) -> st.ContactSession:
        """The state machine of an assigned contact (created on first use)."""
        s = self._sessions.get(view.id)
        if s is None or (view.agent_id is not None and s.agent_id != str(view.agent_id)):
            s = st.ContactSession(view.id, view.skill, consent_version=CONSENT_VERSION)
            if view.agent_id is not None:
                s.assign(str(view.agent_id))
            self._sessions[view.id] = s
        self._views[view.id] = view
        return s

    def media_session(self, contact_id: str) -> MediaSession | None:
        return self.media.get(contact_id)

    # ------------------------------------------------------------------ client messages

    async def request(self, caller: Caller, view: ContactView) -> None:
        await self._run(view, caller, self.session(view).request_video(proto_role(caller.role)))

    async def consent(self, caller: Caller, view: ContactView, msg: p.VideoConsent) -> None:
        t = self.session(view).consent(proto_role(caller.role), msg.accept, msg.consent_version)
        await self._run(view, caller, t)

    async def offer(self, caller: Caller, view: ContactView, msg: p.VideoOffer) -> None:
        p.validate_sdp(msg.sdp, "offer")
        role = proto_role(caller.role)
        s = self.session(view)
        await self._run(view, caller, s.offer(role))
        media = self.media.get(view.id)
        if media is None:
            directory = self.recordings_dir / view.id / f"attempt-{s.attempt}"
            media = self.media.create_session(
                view.id,
                directory,
                on_ended=lambda reason: self._spawn(self._media_ended(view.id, reason)),
            )
        try:
            answer = await media.accept_offer(role, msg.sdp)
        except (NegotiationError, MediaStateError) as exc:
            await self._stop(view, "error", Actor())
            raise p.ProtocolError(p.ErrorCode.BAD_SDP, f"the offer was refused: {exc}") from None
        await self.hub.send(caller.user_id, p.ServerVideoAnswer(contact_id=view.id, sdp=answer))
        await self._run(view, caller, s.answered(role))

    async def hangup(self, caller: Caller, view: ContactView) -> None:
        await self._run(view, caller, self.session(view).hangup(proto_role(caller.role)))

    # ------------------------------------------------------------------ other events

    async def contact_closed(self, view: ContactView) -> None:
        s = self._sessions.pop(view.id, None)
        if s is not None and s.video in st.ACTIVE_VIDEO_STATES:
            await self._stop(view, "closed", Actor())
        self._views.pop(view.id, None)

    async def party_lost(self, user_id: int, role: Role) -> None:
        """A party's last websocket closed: their video attempt cannot go on."""
        for contact_id, s in list(self._sessions.items()):
            view = self._views.get(contact_id)
            if view is None or s.video not in st.ACTIVE_VIDEO_STATES:
                continue
            if user_id in (view.customer_id, view.agent_id):
                await self._stop(view, "disconnect", Actor(user_id, role.value))

    async def _media_ended(self, contact_id: str, reason: str) -> None:
        """The media side ended by itself (ICE failure, connect timeout, peer closed)."""
        s = self._sessions.get(contact_id)
        view = self._views.get(contact_id)
        if s is None or view is None or s.video not in ("negotiating", "live"):
            return
        await self._run(view, None, s.ice_failed(), media_reason=reason)

    async def shutdown(self) -> None:
        await self.media.shutdown()
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ effects

    async def _run(
        self,
        view: ContactView,
        caller: Caller | None,
        t: st.Transition,
        media_reason: str | None = None,
    ) -> None:
        actor = caller.actor if caller is not None else Actor()
        for effect in t.effects:
            if isinstance(effect, st.VideoRequestedBy):
                await self._audit(view, actor, "video.requested", {"by": effect.by})
                frame = p.VideoRequested(contact_id=view.id, by=effect.by)
                await self._both(view, frame)
            elif isinstance(effect, st.ConsentRequired):
                await self.hub.send(
                    view.customer_id,
                    p.VideoConsentRequired(
                        contact_id=view.id,
                        consent_version=effect.consent_version,
                        consent_text=CONSENT_TEXT,
                    ),
                )
            elif isinstance(effect, st.ConsentRecorded):
                await self._audit(
                    view,
                    actor,
                    "video.consent",
                    {
                        "attempt": effect.attempt,
                        "consent_version": effect.consent_version,
                        "consent_text_sha256": CONSENT_TEXT_SHA256,
                        "accepted": effect.accepted,
                    },
                )
            elif isinstance(effect, st.VideoChanged):
                await self._both(view, p.VideoState(contact_id=view.id, state=effect.state))
                if effect.state == "live":
                    await self._audit(view, actor, "video.live", {})
            elif isinstance(effect, st.VideoStopped):
                await self._finish(view, effect.reason, actor, media_reason)
            elif isinstance(effect, st.OfferAccepted):
                continue  # the caller (offer) runs the media negotiation
            else:
                logger.debug("call effect %s needs no action here", type(effect).__name__)

    async def _stop(self, view: ContactView, reason: p.VideoEndReason, actor: Actor) -> None:
        s = self._sessions.get(view.id)
        if s is not None and s.video in st.ACTIVE_VIDEO_STATES:
            if reason == "disconnect":
                role: p.Role = "customer" if actor.user_id == view.customer_id else "agent"
                t = s.disconnect(role)
                s.reconnect(role)  # the party may come back; only this attempt ends
            elif reason == "closed":
                t = s.close("system")
            else:
                t = s.hangup("agent")
            await self._run(view, None, t)
        else:
            await self._finish(view, reason, actor, None)

    async def _finish(
        self, view: ContactView, reason: p.VideoEndReason, actor: Actor, media_reason: str | None
    ) -> None:
        # tell both parties first: closing the media and finalising files may take a while
        await self._audit(view, actor, "video.ended", {"reason": reason})
        await self._both(view, p.VideoEnded(contact_id=view.id, reason=reason))
        media = self.media.get(view.id)
        recordings = {}
        if media is not None:
            await media.close(media_reason or reason)
            recordings = media.recordings
        for role, info in recordings.items():
            if not info.exists:
                continue
            payload: dict[str, object] = {"side": role}
            sealed = await self._seal(view, info.path)
            if sealed is not None:
                path, digest, size = sealed.path, sealed.sha256, sealed.size
                payload.update(file_id=sealed.file_id.hex(), master_key_id=sealed.master_key_id)
            else:
                path = info.path
                digest, size = await asyncio.to_thread(_sha256_file, info.path)
                payload.update(encrypted=False)
            payload.update(
                file=path.relative_to(self.recordings_dir).as_posix(),
                sha256=digest,
                bytes=size,
                duration_s=round(info.duration, 3),
                video_frames=info.video_frames,
            )
            await self._audit(view, Actor(), "recording.finalised", payload)

    async def _seal(self, view: ContactView, path: Path) -> SealedFile | None:
        """Encrypt a final recording at rest; None (plaintext kept, and audited as such)
        when there is no keyring or sealing failed, so the recording is never lost."""
        if self.keyring is None:
            return None
        try:
            return await asyncio.to_thread(
                seal_file, path, self.keyring, tmp_dir=self.recordings_dir.parent / ".sealing"
            )
        except (OSError, EnvelopeError) as exc:
            logger.error("recording of contact %s not encrypted: %s", view.id, type(exc).__name__)
            return None

    async def _both(self, view: ContactView, frame: p.ServerMessage) -> None:
        await self.hub.send(view.customer_id, frame)
        await self.hub.send(view.agent_id, frame)

    async def _audit(
        self, view: ContactView, actor: Actor, type_: str, payload: dict[str, object]
    ) -> None:
        async with self.db.transaction() as session:
            await append(session, type_, payload, actor=actor, session_ref=view.id)

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
