"""Every reach below aiortc's public API, in one place, pinned to aiortc 1.16.x.

Why: aiortc decodes every received frame and encodes every sent one. To relay
and record without transcoding we need (1) the encoded frames coming out of
the receiver's jitter buffer, (2) to send a PLI to a remote sender, (3) to see
the PLI/FIR a remote receiver sends to us, and (4) the codec negotiated for a
sender. aiortc has no public API for any of these, so:

1. ``RTCRtpReceiver._handle_rtp_packet`` puts ``(codec, JitterFrame)`` into the
   private ``__decoder_queue`` read by the ``decoder_worker`` thread. Before the
   receiver starts we replace that queue with :class:`_EncodedFrameQueue`, whose
   ``put`` hands frames to our callback on the event loop and only lets the
   stop sentinel (``None``) through, so the decoder thread idles and exits on stop.
2. ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)`` sends the PLI.
3. ``RTCRtpSender._send_keyframe()`` is what the sender calls on PLI/FIR; we wrap
   it per instance.
4. ``RTCRtpTransceiver._codecs[0]`` is the codec the sender uses.
5. aioice's ``Connection._protocols[*].transport`` are the UDP sockets, whose
   receive buffers we enlarge (the kernel default of ~200 KB holds well under a
   second of a busy connection's packets if the event loop is held up).

``tests/integration/media/test_aiortc_hooks.py`` fails if any of these breaks.
"""

from __future__ import annotations

import logging
import queue
import socket
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import (
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.jitterbuffer import JitterFrame

logger = logging.getLogger(__name__)

PINNED_AIORTC = "1.16."

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"
_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"

EncodedFrameCallback = Callable[[RTCRtpCodecParameters, JitterFrame], None]


class HookError(RuntimeError):
    """aiortc's internals are not what these hooks were written against."""


def check_aiortc_version(version: str = aiortc.__version__) -> None:
    """Refuse to run the hooks on an aiortc other than the pinned minor version."""
    if not version.startswith(PINNED_AIORTC):
        raise HookError(
            f"signaling.media.aiortc_hooks supports aiortc {PINNED_AIORTC}x only, "
            f"found {version}: re-check the hooks before bumping the pin"
        )


check_aiortc_version()


class _EncodedFrameQueue(queue.Queue[Any]):
    """Stands in for the receiver's decoder input queue: frames go to a callback.

    ``put`` is called by ``RTCRtpReceiver._handle_rtp_packet`` on the event loop,
    so the callback runs on the loop, in order, one frame at a time.
    """

    def __init__(self, callback: EncodedFrameCallback) -> None:
        super().__init__()
        self._callback = callback

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            # stop sentinel: let the (idle) decoder thread see it and exit
            super().put(None, block, timeout)
            return
        codec, frame = item
        try:
            self._callback(codec, frame)
        except Exception:
            # never break aiortc's RTP receive path because of a consumer
            logger.exception("encoded frame consumer failed")


def install_encoded_frame_hook(receiver: RTCRtpReceiver, callback: EncodedFrameCallback) -> None:
    """Route the receiver's encoded frames to ``callback`` instead of its decoder.

    Must run before ``receiver.receive()`` starts the decoder thread, e.g. from
    the peer connection's ``track`` event (emitted inside setRemoteDescription).
    """
    if getattr(receiver, _DECODER_THREAD, "missing") is not None:
        raise HookError("receiver already started, or aiortc receiver internals changed")
    current = getattr(receiver, _DECODER_QUEUE, None)
    if not isinstance(current, queue.Queue) or isinstance(current, _EncodedFrameQueue):
        raise HookError("aiortc receiver has no plain decoder queue to replace")
    setattr(receiver, _DECODER_QUEUE, _EncodedFrameQueue(callback))


def is_hooked(receiver: RTCRtpReceiver) -> bool:
    return isinstance(getattr(receiver, _DECODER_QUEUE, None), _EncodedFrameQueue)


def media_ssrcs(receiver: RTCRtpReceiver) -> list[int]:
    """SSRCs the remote peer sent media on recently (retransmission SSRCs left out)."""
    rtx: dict[int, int] = getattr(receiver, _RTX_SSRC, {})
    return [s.source for s in receiver.getSynchronizationSources() if s.source not in rtx]


async def send_pli(receiver: RTCRtpReceiver) -> int:
    """Ask the remote sender for a keyframe (RTCP PLI); returns how many SSRCs were asked."""
    ssrcs = media_ssrcs(receiver)
    for ssrc in ssrcs:
        await receiver._send_rtcp_pli(ssrc)
    return len(ssrcs)


def install_keyframe_request_hook(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever the remote receiver asks this sender for a keyframe.

    aiortc's own handling (force the next encoded frame to be a keyframe) is kept,
    which matters when this sender transcodes.
    """
    original = getattr(sender, "_send_keyframe", None)
    if not callable(original):
        raise HookError("aiortc RTCRtpSender has no _send_keyframe")

    def _send_keyframe() -> None:
        original()
        try:
            callback()
        except Exception:
            logger.exception("keyframe request callback failed")

    sender._send_keyframe = _send_keyframe  # type: ignore[method-assign]


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """The codec the transceiver's sender encodes/packs with, once negotiated."""
    codecs: list[RTCRtpCodecParameters] = getattr(transceiver, "_codecs", [])
    return codecs[0] if codecs else None


def set_udp_buffers(pc: RTCPeerConnection, size: int) -> int:
    """Best effort: set SO_RCVBUF/SO_SNDBUF of the connection's ICE sockets.

    Call once candidates are gathered (after setLocalDescription). The kernel caps
    the value at ``net.core.rmem_max``/``wmem_max``. Returns the sockets changed.
    """
    changed = 0
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        connection = getattr(ice, "_connection", None)
        for protocol in getattr(connection, "_protocols", []):
            transport = getattr(protocol, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is None or id(sock) in seen:
                continue
            seen.add(id(sock))
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError:
                continue
            changed += 1
    return changed
