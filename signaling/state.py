"""The per-contact state machine: contact lifecycle plus the video sub-state.

Pure and synchronous: the websocket handler feeds it events and executes the returned
effects (send frames, start/stop media, write the audit log). Keeping the rules here, away
from I/O, lets them be tested exhaustively. An event that is not valid in the current state
raises ``ProtocolError(out_of_order)`` (or ``forbidden`` for a role that may never do it)
and leaves the session unchanged.

Contact: ``queued → assigned → closed`` (``assigned → queued`` on transfer to a skill or
requeue after an agent's disconnect grace expired). Video, only while assigned::

    none ──customer request──▶ requested ──agent request (accepts)──▶ consent_pending
    none ──agent request────────────────────────────────────────────▶ consent_pending
    consent_pending ──customer accepts──▶ consented ──first offer──▶ negotiating
    negotiating ──every leg answered──▶ live
    consent_pending ──customer declines──▶ none (chat continues)
    requested…live ──hangup / disconnect / ice_failed / transfer──▶ ended
    ended ──request──▶ requested | consent_pending   (a new attempt: consent again)

Every video attempt needs its own consent: ``live`` implies the customer accepted consent
for the *current* attempt. The browsers each negotiate their own leg (browser ↔ our
server), so ``live`` is reached when every configured leg has offered and been answered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from signaling.protocol import (
    ContactCloseReason,
    ErrorCode,
    ProtocolError,
    Role,
    VideoEndReason,
    VideoStateName,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVE_VIDEO_STATES",
    "Assigned",
    "Closed",
    "ConsentRecorded",
    "ConsentRequired",
    "ContactSession",
    "ContactStateName",
    "Effect",
    "LegState",
    "OfferAccepted",
    "PresenceChanged",
    "Requeued",
    "Transferred",
    "Transition",
    "VideoChanged",
    "VideoRequestedBy",
    "VideoStopped",
]

ContactStateName = Literal["queued", "assigned", "closed"]
LegState = Literal["idle", "offered", "answered"]

#: Video states in which media is being set up or flowing (something to tear down).
ACTIVE_VIDEO_STATES: Final[frozenset[VideoStateName]] = frozenset(
    {"requested", "consent_pending", "consented", "negotiating", "live"}
)


# --------------------------------------------------------------------------- effects
# What the caller must do after a transition, in order.


@dataclass(frozen=True, slots=True)
class Assigned:
    """Tell both parties the contact is now handled by ``agent_id``."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class Requeued:
    """Put the contact back at the head of ``skill``'s queue; tell the customer."""

    skill: str


@dataclass(frozen=True, slots=True)
class Transferred:
    """Contact moved from ``from_agent_id`` to ``agent_id``."""

    from_agent_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class Closed:
    """Contact is over: notify both sides, release the agent's capacity."""

    reason: ContactCloseReason


@dataclass(frozen=True, slots=True)
class VideoRequestedBy:
    """Send ``video.requested`` to the other party."""

    by: Role


@dataclass(frozen=True, slots=True)
class ConsentRequired:
    """Send ``video.consent_required`` (this consent text version) to the customer."""

    consent_version: str


@dataclass(frozen=True, slots=True)
class ConsentRecorded:
    """Write the customer's consent decision to the audit trail."""

    attempt: int
    consent_version: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class OfferAccepted:
    """Hand ``role``'s SDP offer to the media layer, which answers it."""

    role: Role


@dataclass(frozen=True, slots=True)
class VideoStopped:
    """Tear down media of the current attempt and send ``video.ended``."""

    reason: VideoEndReason


@dataclass(frozen=True, slots=True)
class VideoChanged:
    """Send ``video.state`` to both parties."""

    state: VideoStateName


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """Send ``presence`` to the other party."""

    role: Role
    online: bool


Effect = (
    Assigned
    | Requeued
    | Transferred
    | Closed
    | VideoRequestedBy
    | ConsentRequired
    | ConsentRecorded
    | OfferAccepted
    | VideoStopped
    | VideoChanged
    | PresenceChanged
)


@dataclass(frozen=True, slots=True)
class Transition:
    """Result of an accepted event: the new states and the effects to execute in order."""

    contact: ContactStateName
    video: VideoStateName
    effects: tuple[Effect, ...]


# --------------------------------------------------------------------------- session


def _out_of_order(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.OUT_OF_ORDER, message)


class ContactSession:
    """State of one contact and its video, driven by events from both parties.

    ``video_legs`` are the roles whose browser must negotiate a peer connection with the
    server before the video counts as ``live`` (both, by default).
    """

    def __init__(
        self,
        contact_id: str,
        skill: str,
        *,
        consent_version: str,
        video_legs: Iterable[Role] = ("customer", "agent"),
    ) -> None:
        legs = tuple(dict.fromkeys(video_legs))
        if not legs:
            raise ValueError("at least one video leg is required")
        self.contact_id = contact_id
        self.skill = skill
        self.consent_version = consent_version
        self.video_legs: tuple[Role, ...] = legs
        self._contact: ContactStateName = "queued"
        self._video: VideoStateName = "none"
        self._agent_id: str | None = None
        self._attempt = 0
        self._consented_attempt: int | None = None
        self._legs: dict[Role, LegState] = dict.fromkeys(legs, "idle")
        self._online: dict[Role, bool] = {"customer": True, "agent": True}

    # ------------------------------------------------------------------ read-only view

    @property
    def state(self) -> ContactStateName:
        return self._contact

    @property
    def video(self) -> VideoStateName:
        return self._video

    @property
    def agent_id(self) -> str | None:
        return self._agent_id

    @property
    def attempt(self) -> int:
        """Number of the current (or last) video attempt; 0 before the first request."""
        return self._attempt

    @property
    def consented_attempt(self) -> int | None:
        """The last attempt the customer accepted consent for."""
        return self._consented_attempt

    @property
    def legs(self) -> dict[Role, LegState]:
        return dict(self._legs)

    def online(self, role: Role) -> bool:
        return self._online[role]

    # ------------------------------------------------------------------ helpers

    def _done(self, effects: list[Effect]) -> Transition:
        return Transition(self._contact, self._video, tuple(effects))

    def _set_video(self, state: VideoStateName, effects: list[Effect]) -> None:
        if state != self._video:
            self._video = state
            effects.append(VideoChanged(state))

    def _require_open(self, event: str) -> None:
        if self._contact == "closed":
            raise _out_of_order(f"{event}: contact is closed")

    def _require_assigned(self, event: str) -> None:
        self._require_open(event)
        if self._contact != "assigned":
            raise _out_of_order(f"{event}: contact is not assigned to an agent")

    def _stop_video(
        self, reason: VideoEndReason, effects: list[Effect], *, to: VideoStateName = "ended"
    ) -> None:
        """End the current attempt, if any; ``to`` is ``none`` when a new agent takes over."""
        if self._video in ACTIVE_VIDEO_STATES:
            effects.append(VideoStopped(reason))
            self._set_video(to, effects)
        elif to == "none":
            self._set_video("none", effects)
        self._legs = dict.fromkeys(self.video_legs, "idle")

    # ------------------------------------------------------------------ contact events

    def assign(self, agent_id: str) -> Transition:
        """The router gave the queued contact to ``agent_id``."""
        self._require_open("assign")
        if self._contact != "queued":
            raise _out_of_order("assign: contact is not queued")
        self._contact = "assigned"
        self._agent_id = agent_id
        self._online["agent"] = True
        return self._done([Assigned(agent_id)])

    def transfer(
        self, by: Role, *, to_agent_id: str | None = None, to_skill: str | None = None
    ) -> Transition:
        """Agent hands the contact over; ends any video (the new agent must ask again).

        Ask the router first (it checks the target's availability and capacity), then
        apply the transfer here.
        """
        self._require_open("transfer")
        if by != "agent":
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the agent can transfer a contact")
        if (to_agent_id is None) == (to_skill is None):
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "exactly one of to_agent_id or to_skill is required"
            )
        self._require_assigned("transfer")
        assert self._agent_id is not None
        if to_agent_id is not None and to_agent_id == self._agent_id:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "cannot transfer a contact to its current agent"
            )
        effects: list[Effect] = []
        self._stop_video("transfer", effects, to="none")
        if to_agent_id is not None:
            effects.append(Transferred(self._agent_id, to_agent_id))
            self._agent_id = to_agent_id
            self._online["agent"] = True
        else:
            assert to_skill is not None
            self.skill = to_skill
            self._contact = "queued"
            self._agent_id = None
            effects.append(Requeued(to_skill))
        return self._done(effects)

    def requeue(self) -> Transition:
        """The agent stayed disconnected past the grace period: back to the queue head."""
        self._require_assigned("requeue")
        effects: list[Effect] = []
        self._stop_video("disconnect", effects, to="none")
        self._contact = "queued"
        self._agent_id = None
        self._online["agent"] = True
        effects.append(Requeued(self.skill))
        return self._done(effects)

    def close(self, reason: ContactCloseReason = "system") -> Transition:
        """End the contact; any video is ended first. ``closed`` is terminal."""
        self._require_open("close")
        effects: list[Effect] = []
        self._stop_video("closed", effects)
        self._contact = "closed"
        effects.append(Closed(reason))
        return self._done(effects)

    def disconnect(self, role: Role) -> Transition:
        """``role``'s websocket dropped: video cannot survive it, chat can."""
        self._require_open("disconnect")
        effects: list[Effect] = []
        if self._online[role]:
            self._online[role] = False
            if self._contact == "assigned":
                effects.append(PresenceChanged(role, False))
        self._stop_video("disconnect", effects)
        return self._done(effects)

    def reconnect(self, role: Role) -> Transition:
        """``role`` is back (within any grace period)."""
        self._require_open("reconnect")
        effects: list[Effect] = []
        if not self._online[role]:
            self._online[role] = True
            if self._contact == "assigned":
                effects.append(PresenceChanged(role, True))
        return self._done(effects)

    # ------------------------------------------------------------------ video events

    def request_video(self, by: Role) -> Transition:
        """Either party asks for video; an agent's request also accepts a customer's."""
        self._require_assigned("video.request")
        effects: list[Effect] = []
        if self._video in ("none", "ended"):
            self._attempt += 1
            self._legs = dict.fromkeys(self.video_legs, "idle")
            effects.append(VideoRequestedBy(by))
            if by == "customer":
                self._set_video("requested", effects)
            else:
                effects.append(ConsentRequired(self.consent_version))
                self._set_video("consent_pending", effects)
        elif self._video == "requested" and by == "agent":
            effects.append(ConsentRequired(self.consent_version))
            self._set_video("consent_pending", effects)
        else:
            raise _out_of_order(f"video.request: video is already {self._video}")
        return self._done(effects)

    def consent(self, by: Role, accept: bool, consent_version: str) -> Transition:
        """The customer's answer to the consent prompt; nobody can answer for them."""
        self._require_open("video.consent")
        if by != "customer":
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the customer can give consent")
        if self._contact != "assigned" or self._video != "consent_pending":
            raise _out_of_order("video.consent: no consent is pending")
        if consent_version != self.consent_version:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "consent_version does not match the text shown"
            )
        effects: list[Effect] = [ConsentRecorded(self._attempt, consent_version, accept)]
        if accept:
            self._consented_attempt = self._attempt
            self._set_video("consented", effects)
        else:
            effects.append(VideoStopped("declined"))
            self._set_video("none", effects)
        return self._done(effects)

    def offer(self, by: Role) -> Transition:
        """``by``'s browser sent an SDP offer for its leg; only after consent."""
        self._require_assigned("video.offer")
        if self._video not in ("consented", "negotiating"):
            raise _out_of_order(f"video.offer: not allowed while video is {self._video}")
        if self._consented_attempt != self._attempt:  # defensive: states imply it
            raise _out_of_order("video.offer: consent is required first")
        if self._legs.get(by) != "idle":
            raise _out_of_order(f"video.offer: {by} already offered for this attempt")
        self._legs[by] = "offered"
        effects: list[Effect] = [OfferAccepted(by)]
        self._set_video("negotiating", effects)
        return self._done(effects)

    def answered(self, role: Role) -> Transition:
        """The server answered ``role``'s offer; live once every leg is answered."""
        self._require_assigned("answered")
        if self._video != "negotiating" or self._legs.get(role) != "offered":
            raise _out_of_order(f"answered: {role} has no pending offer")
        self._legs[role] = "answered"
        effects: list[Effect] = []
        if all(state == "answered" for state in self._legs.values()):
            self._set_video("live", effects)
        return self._done(effects)

    def ice_failed(self) -> Transition:
        """A leg's ICE/DTLS connection failed: the attempt is over (restartable)."""
        self._require_assigned("ice_failed")
        if self._video not in ("negotiating", "live"):
            raise _out_of_order(f"ice_failed: no connection while video is {self._video}")
        effects: list[Effect] = []
        self._stop_video("ice_failed", effects)
        return self._done(effects)

    def hangup(self, by: Role) -> Transition:
        """Either party ends or cancels the current video attempt."""
        self._require_assigned("video.hangup")
        if self._video not in ACTIVE_VIDEO_STATES:
            raise _out_of_order(f"video.hangup: no video while video is {self._video}")
        effects: list[Effect] = []
        self._stop_video("hangup", effects)
        logger.debug("contact %s: video hung up by %s", self.contact_id, by)
        return self._done(effects)
