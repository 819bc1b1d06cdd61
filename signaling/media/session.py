"""One contact's video call on the server: two peer connections, relay, recording, tap.

Design (see docs/media.md):

* The customer's browser and the agent's browser each open a peer connection
  to the server (non-trickle: they send a complete offer, we answer with all
  our candidates). Renegotiation is not supported: one offer per role.
* Before an offer is applied the server adds one sendrecv transceiver per kind
  whose sender plays a :class:`RelayTrack` of the *other* role's source. Either
  leg can connect first; the late joiner gets media when it arrives.
* Forwarding mode (default): encoded frames are taken from aiortc's receivers
  (:mod:`.aiortc_hooks`) and sent on, recorded and tapped without transcoding.
  Decode mode (``forward_encoded=False``) uses aiortc's public API only: every
  frame is decoded and re-encoded by aiortc; recording encodes in a thread.
* Any leg failing, closing, or not connecting in time ends the whole session;
  ``close()`` is idempotent and always finalises both recordings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.jitterbuffer import JitterFrame

from . import aiortc_hooks as hooks
from .frames import DecodedFrame, EncodedFrame, Kind, is_keyframe
from .recorder import RecordingInfo, SideRecorder
from .relay import RelayTrack
from .source import MediaSource
from .tap import LatestFrameTap

logger = logging.getLogger(__name__)

Role = Literal["customer", "agent"]
ROLES: tuple[Role, Role] = ("customer", "agent")
KINDS: tuple[Kind, Kind] = ("audio", "video")

StateCallback = Callable[[Role, str], None]
IceProvider = Callable[[], Sequence[RTCIceServer]]
EndedCallback = Callable[[str], None]


class MediaError(Exception):
    """Base class of media session errors."""


class MediaStateError(MediaError):
    """The call is not in a state that allows this (ended, offer already accepted)."""


class NegotiationError(MediaError):
    """The offer could not be answered (malformed SDP, no common codec)."""


@dataclass(frozen=True)
class MediaConfig:
    """Tunables for all sessions; defaults suit 640x480 browser video."""

    ice_servers: tuple[RTCIceServer, ...] = ()
    forward_encoded: bool = True
    """Relay/record encoded frames (needs :mod:`.aiortc_hooks`); False = decode mode."""
    record: bool = True
    connect_timeout: float = 30.0
    """A leg that has not connected this long after its offer ends the session."""
    video_codecs: tuple[str, ...] = ("video/VP8", "video/H264")
    """Answer preference; the same first choice on both legs avoids transcoding."""
    relay_queue_video: int = 30
    relay_queue_audio: int = 25
    recorder_queue: int = 600
    tap_max_chain: int = 90
    keyframe_min_interval: float = 0.5
    close_timeout: float = 10.0
    udp_buffer_bytes: int = 1 << 20
    """Receive/send buffer of each ICE socket (0 keeps the kernel default)."""


@dataclass
class _Leg:
    role: Role
    pc: RTCPeerConnection
    relays: dict[Kind, RelayTrack] = field(default_factory=dict)
    transceivers: dict[Kind, RTCRtpTransceiver] = field(default_factory=dict)
    state: str = "new"
    timer: asyncio.Task[None] | None = None
    connected_at: float | None = None


def other_role(role: Role) -> Role:
    return "agent" if role == "customer" else "customer"


def video_codec_preferences(mime_types: tuple[str, ...]) -> list[RTCRtpCodecCapability]:
    """aiortc video capabilities ordered by ``mime_types`` (RTX kept last)."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    ordered = [c for m in mime_types for c in caps if c.mimeType.lower() == m.lower()]
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    return ordered + rtx


class MediaSession:
    """Server side of one video call between a customer and an agent.

    Callbacks are plain functions run on the event loop; they must not block
    (schedule a task for I/O). ``on_ended`` is called exactly once.
    """

    def __init__(
        self,
        session_id: str,
        config: MediaConfig | None = None,
        recording_dir: Path | None = None,
        *,
        on_state: StateCallback | None = None,
        on_ended: EndedCallback | None = None,
        executor: Executor | None = None,
        ice_servers: IceProvider | None = None,
    ) -> None:
        self.session_id = session_id
        self._ice_servers = ice_servers
        self.config = config or MediaConfig()
        self.recording_dir = recording_dir
        self._on_state = on_state
        self._on_ended = on_ended
        self._executor = executor
        self._legs: dict[Role, _Leg] = {}
        self._sources: dict[Role, dict[Kind, MediaSource]] = {
            role: {
                kind: MediaSource(
                    role, kind, keyframe_min_interval=self.config.keyframe_min_interval
                )
                for kind in KINDS
            }
            for role in ROLES
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_task: asyncio.Task[None] | None = None
        self._closing = False
        self._done = asyncio.Event()
        self._end_reason: str | None = None
        self._recordings: dict[Role, RecordingInfo] = {}
        self._started = time.monotonic()

        customer_video = self._sources["customer"]["video"]
        self.tap = LatestFrameTap(
            customer_video.request_keyframe,
            executor=executor,
            max_chain=self.config.tap_max_chain,
        )
        customer_video.subscribe(self.tap)

        self._recorders: dict[Role, SideRecorder] = {}
        if self.config.record and recording_dir is not None:
            for role in ROLES:
                video = self._sources[role]["video"]
                recorder = SideRecorder(
                    recording_dir / f"{role}.mkv",
                    maxlen=self.config.recorder_queue,
                    on_keyframe_needed=video.request_keyframe,
                )
                for kind in KINDS:
                    self._sources[role][kind].subscribe(recorder)
                self._recorders[role] = recorder

    # -- state ------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._done.is_set()

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def end_reason(self) -> str | None:
        return self._end_reason

    def state(self, role: Role) -> str:
        """The role's peer connection state ("none" before its offer)."""
        leg = self._legs.get(role)
        return leg.state if leg is not None else "none"

    @property
    def recordings(self) -> dict[Role, RecordingInfo]:
        """Finalised recordings, filled once the session has ended."""
        return dict(self._recordings)

    def recording_paths(self) -> dict[Role, Path]:
        return {role: rec.path for role, rec in self._recorders.items()}

    def source(self, role: Role, kind: Kind) -> MediaSource:
        return self._sources[role][kind]

    def peer_connection(self, role: Role) -> RTCPeerConnection | None:
        leg = self._legs.get(role)
        return leg.pc if leg is not None else None

    def relay(self, role: Role, kind: Kind) -> RelayTrack | None:
        """The track the server sends to ``role`` (the other party's ``kind``)."""
        leg = self._legs.get(role)
        return leg.relays.get(kind) if leg is not None else None

    async def wait_ended(self) -> str:
        await self._done.wait()
        return self._end_reason or ""

    # -- negotiation ------------------------------------------------------------------------

    async def accept_offer(self, role: Role, sdp: str) -> str:
        """Answer ``role``'s complete (non-trickle) offer; returns the answer SDP.

        The answer holds all server candidates (aiortc gathers before returning).
        Raises :class:`MediaStateError` if the session ended or the role already
        has a connection, :class:`NegotiationError` if the offer is unusable; the
        session is then ended with reason ``"<role>_negotiation_failed"``.
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if self._closing:
            raise MediaStateError("media session has ended")
        if role in self._legs:
            raise MediaStateError(f"{role} already has a media connection")

        servers = self._ice_servers() if self._ice_servers else self.config.ice_servers
        ice = list(servers) or None
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        leg = _Leg(role=role, pc=pc)
        self._legs[role] = leg
        pc.on("connectionstatechange", lambda: self._on_pc_state(leg))
        pc.on("track", lambda track: self._on_track(leg, track))

        forward = self.config.forward_encoded
        # Only the kinds the offer has: a browser without a microphone (or an agent without
        # a camera) offers fewer m-lines, and an unmatched transceiver breaks the answer.
        try:
            offered = {m.kind for m in aiortc_sdp.SessionDescription.parse(sdp).media}
        except Exception:
            offered = set()
        if not offered & set(KINDS):
            logger.warning("media %s: %s offer has no audio or video", self._log_id, role)
            await self.close(f"{role}_negotiation_failed")
            raise NegotiationError(f"the {role} offer has no audio or video")
        for kind in (k for k in KINDS if k in offered):
            source = self._sources[other_role(role)][kind]
            maxlen = (
                self.config.relay_queue_video if kind == "video" else self.config.relay_queue_audio
            )
            relay = RelayTrack(source, maxlen=maxlen, executor=self._executor)
            transceiver = pc.addTransceiver(relay, direction="sendrecv")
            if kind == "video":
                transceiver.setCodecPreferences(video_codec_preferences(self.config.video_codecs))
                if forward:
                    hooks.install_keyframe_request_hook(transceiver.sender, source.request_keyframe)
            leg.relays[kind] = relay
            leg.transceivers[kind] = transceiver

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            logger.warning(
                "media %s: %s offer rejected: %s", self._log_id, role, type(exc).__name__
            )
            await self.close(f"{role}_negotiation_failed")
            raise NegotiationError(f"cannot answer the {role} offer") from exc
        if self._closing:
            raise MediaStateError("media session has ended")

        if self.config.udp_buffer_bytes > 0:
            hooks.set_udp_buffers(pc, self.config.udp_buffer_bytes)
        if forward:
            for kind, transceiver in leg.transceivers.items():
                leg.relays[kind].set_sink_codec(hooks.negotiated_codec(transceiver))
        if self.config.connect_timeout > 0 and leg.state != "connected":
            leg.timer = self._spawn(self._connect_timer(leg))
        return str(pc.localDescription.sdp)

    # -- events -----------------------------------------------------------------------------

    @property
    def _log_id(self) -> str:
        return self.session_id[:8]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _ice_failed(leg: _Leg) -> bool:
        """Consent lost: aiortc then reports the connection as "closed", but the end
        reason should say the network failed, not that the peer hung up."""
        return any(
            t.receiver.transport.transport.state == "failed" for t in leg.pc.getTransceivers()
        )

    def _on_pc_state(self, leg: _Leg) -> None:
        state = leg.pc.connectionState
        if state == leg.state:
            return
        leg.state = state
        logger.info("media %s: %s %s", self._log_id, leg.role, state)
        if state == "connected" and leg.connected_at is None:
            leg.connected_at = time.monotonic()
            if leg.timer is not None:
                leg.timer.cancel()
        if self._on_state is not None:
            try:
                self._on_state(leg.role, state)
            except Exception:
                logger.exception("on_state callback failed")
        if not self._closing and state in ("failed", "closed"):
            failed = state == "failed" or self._ice_failed(leg)
            self._begin_close(f"{leg.role}_{'failed' if failed else 'closed'}")

    def _on_track(self, leg: _Leg, track: MediaStreamTrack) -> None:
        transceiver = next((t for t in leg.pc.getTransceivers() if t.receiver.track is track), None)
        kind: Kind = "video" if track.kind == "video" else "audio"
        primary = transceiver is not None and transceiver is leg.transceivers.get(kind)
        source = self._sources[leg.role][kind] if primary else None
        if source is not None and source.attached:
            source = None
        if self.config.forward_encoded and transceiver is not None:
            receiver = transceiver.receiver
            try:
                hooks.install_encoded_frame_hook(receiver, self._encoded_sink(kind, source))
            except hooks.HookError:
                logger.exception("media %s: forwarding hook failed, decoding instead", self._log_id)
            else:
                if source is not None:
                    source.attach(lambda: hooks.send_pli(receiver))
                return
        if source is not None:
            source.attach(None)
        # decode mode (or hook failure): consume the decoded track so nothing piles up
        self._spawn(self._pump(track, kind, source))

    @staticmethod
    def _encoded_sink(
        kind: Kind, source: MediaSource | None
    ) -> Callable[[RTCRtpCodecParameters, JitterFrame], None]:
        if source is None:
            return lambda codec, frame: None

        def sink(codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
            data = frame.data
            source.publish(
                EncodedFrame(
                    kind=kind,
                    codec=codec,
                    data=data,
                    timestamp=frame.timestamp,
                    keyframe=is_keyframe(codec.name, data) if kind == "video" else True,
                    arrival=time.monotonic(),
                )
            )

        return sink

    async def _pump(self, track: MediaStreamTrack, kind: Kind, source: MediaSource | None) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if source is not None:
                source.publish(DecodedFrame(kind, frame, time.monotonic()))  # type: ignore[arg-type]

    async def _connect_timer(self, leg: _Leg) -> None:
        await asyncio.sleep(self.config.connect_timeout)
        if leg.state != "connected" and not self._closing:
            self._begin_close(f"{leg.role}_connect_timeout")

    # -- teardown ---------------------------------------------------------------------------

    def _begin_close(self, reason: str) -> None:
        if self._close_task is None and not self._closing:
            self._close_task = asyncio.ensure_future(self.close(reason))

    async def close(self, reason: str = "closed") -> None:
        """End the call: close both peer connections, finalise both recordings.

        Idempotent and safe to call concurrently; later callers wait for the
        first close to finish. The first reason wins.
        """
        if self._closing:
            await self._done.wait()
            return
        self._closing = True
        self._end_reason = reason
        logger.info("media %s: ending (%s)", self._log_id, reason)
        current = asyncio.current_task()
        timeout = self.config.close_timeout
        try:
            for leg in self._legs.values():
                if leg.timer is not None and leg.timer is not current:
                    leg.timer.cancel()
            await asyncio.gather(*(self._close_pc(leg.pc, timeout) for leg in self._legs.values()))
            for by_kind in self._sources.values():
                for source in by_kind.values():
                    await source.close()
            self.tap.close()
            pending = [t for t in self._tasks if t is not current]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout)
            infos = await asyncio.gather(
                *(self._close_recorder(rec, timeout) for rec in self._recorders.values())
            )
            for role, info in zip(self._recorders, infos, strict=True):
                if info is not None:
                    self._recordings[role] = info
        finally:
            self._done.set()
            if self._on_ended is not None:
                try:
                    self._on_ended(reason)
                except Exception:
                    logger.exception("on_ended callback failed")

    @staticmethod
    async def _close_pc(pc: RTCPeerConnection, limit_s: float) -> None:
        try:
            await asyncio.wait_for(pc.close(), limit_s)
        except Exception:
            logger.exception("peer connection did not close cleanly")

    @staticmethod
    async def _close_recorder(recorder: SideRecorder, limit_s: float) -> RecordingInfo | None:
        try:
            return await asyncio.wait_for(recorder.close(), limit_s)
        except Exception:
            logger.exception("recording was not finalised in time")
            return None


class MediaManager:
    """Owns every live media session; ``shutdown()`` ends them all on server stop."""

    def __init__(
        self,
        config: MediaConfig | None = None,
        *,
        decode_workers: int = 2,
        ice_servers: IceProvider | None = None,
    ) -> None:
        """``ice_servers``, if given, is called per connection (fresh TURN credentials)."""
        self.config = config or MediaConfig()
        self._ice_servers = ice_servers
        self._sessions: dict[str, MediaSession] = {}
        self._executor = ThreadPoolExecutor(
            max_workers=decode_workers, thread_name_prefix="media-decode"
        )
        self._shutting_down = False

    @property
    def sessions(self) -> dict[str, MediaSession]:
        return dict(self._sessions)

    def get(self, session_id: str) -> MediaSession | None:
        return self._sessions.get(session_id)

    def create_session(
        self,
        session_id: str,
        recording_dir: Path | None,
        *,
        on_state: StateCallback | None = None,
        on_ended: EndedCallback | None = None,
    ) -> MediaSession:
        """Create the media side of a call; recordings go to ``recording_dir``.

        ``recording_dir`` None disables recording for this session.
        """
        if self._shutting_down:
            raise MediaStateError("media manager is shutting down")
        existing = self._sessions.get(session_id)
        if existing is not None and not existing.closing:
            raise MediaStateError("a media session with this id is live")

        def ended(reason: str) -> None:
            if self._sessions.get(session_id) is session:
                del self._sessions[session_id]
            if on_ended is not None:
                on_ended(reason)

        session = MediaSession(
            session_id,
            self.config,
            recording_dir,
            on_state=on_state,
            on_ended=ended,
            executor=self._executor,
            ice_servers=self._ice_servers,
        )
        self._sessions[session_id] = session
        return session

    async def close_session(self, session_id: str, reason: str = "closed") -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            await session.close(reason)

    async def shutdown(self, reason: str = "shutdown") -> None:
        """End every session (recordings finalised), then stop the decode workers."""
        self._shutting_down = True
        sessions = list(self._sessions.values())
        if sessions:
            await asyncio.gather(*(s.close(reason) for s in sessions), return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = [
    "KINDS",
    "ROLES",
    "MediaConfig",
    "MediaError",
    "MediaManager",
    "MediaSession",
    "MediaStateError",
    "NegotiationError",
    "Role",
    "other_role",
]
