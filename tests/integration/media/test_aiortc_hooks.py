"""The hooks below aiortc's public API: these fail if an aiortc change breaks them."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCSessionDescription
from aiortc.jitterbuffer import JitterFrame

from signaling.media import aiortc_hooks as hooks
from signaling.media.frames import is_vp8_keyframe
from signaling.media.testing import PatternVideoTrack

from .conftest import media_threads, wait_until


def test_version_pin() -> None:
    hooks.check_aiortc_version()
    with pytest.raises(hooks.HookError):
        hooks.check_aiortc_version("1.17.0")
    with pytest.raises(hooks.HookError):
        hooks.check_aiortc_version("2.0.0")


async def test_hooks_on_a_live_connection() -> None:
    threads_before = media_threads()
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    send_transceiver = sender_pc.addTransceiver(PatternVideoTrack(1, fps=15), direction="sendonly")
    frames: list[tuple[RTCRtpCodecParameters, JitterFrame]] = []
    keyframe_requests: list[int] = []
    hooks.install_keyframe_request_hook(
        send_transceiver.sender, lambda: keyframe_requests.append(1)
    )

    hooked: list[object] = []

    @receiver_pc.on("track")
    def on_track(track: object) -> None:
        receiver = next(
            t.receiver for t in receiver_pc.getTransceivers() if t.receiver.track is track
        )
        hooks.install_encoded_frame_hook(receiver, lambda c, f: frames.append((c, f)))
        hooked.append(receiver)

    await sender_pc.setLocalDescription(await sender_pc.createOffer())
    await receiver_pc.setRemoteDescription(sender_pc.localDescription)
    await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
    await sender_pc.setRemoteDescription(
        RTCSessionDescription(sdp=receiver_pc.localDescription.sdp, type="answer")
    )
    try:
        await wait_until(lambda: len(frames) >= 20)
        receiver = hooked[0]
        assert hooks.is_hooked(receiver)  # type: ignore[arg-type]
        codec, first = frames[0]
        assert codec.mimeType == "video/VP8"
        assert is_vp8_keyframe(first.data) and first.timestamp == 0
        stamps = [f.timestamp for _, f in frames]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        # nothing reached aiortc's decoder: the track's frame queue stays empty
        track = receiver.track  # type: ignore[attr-defined]
        assert track._queue.qsize() == 0

        # hooking a receiver that already runs is refused
        with pytest.raises(hooks.HookError):
            hooks.install_encoded_frame_hook(receiver, lambda c, f: None)  # type: ignore[arg-type]

        # PLI from the hooked receiver reaches the sender hook and aiortc forces a keyframe
        assert hooks.media_ssrcs(receiver) == [send_transceiver.sender._ssrc]  # type: ignore[arg-type]
        seen = len(frames)
        assert await hooks.send_pli(receiver) == 1  # type: ignore[arg-type]
        await wait_until(lambda: len(keyframe_requests) >= 1, 3)
        await wait_until(lambda: any(is_vp8_keyframe(f.data) for _, f in frames[seen:]), 3)

        for pc in (sender_pc, receiver_pc):
            codec_used = hooks.negotiated_codec(pc.getTransceivers()[0])
            assert codec_used is not None and codec_used.mimeType == "video/VP8"
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    # the idle decoder thread still exits on stop, after signalling end of stream
    assert media_threads() == threads_before
    assert receiver.track._queue.get_nowait() is None  # type: ignore[attr-defined]


async def test_hook_refuses_foreign_objects() -> None:
    class NotAReceiver:
        pass

    with pytest.raises(hooks.HookError):
        hooks.install_encoded_frame_hook(NotAReceiver(), lambda c, f: None)  # type: ignore[arg-type]
    with pytest.raises(hooks.HookError):
        hooks.install_keyframe_request_hook(NotAReceiver(), lambda: None)  # type: ignore[arg-type]
    assert hooks.negotiated_codec(NotAReceiver()) is None  # type: ignore[arg-type]
    await asyncio.sleep(0)


async def test_udp_buffers_are_enlarged() -> None:
    import socket

    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        assert hooks.set_udp_buffers(pc, 1 << 20) >= 1
        ice = pc.getTransceivers()[0].receiver.transport.transport
        sock = ice._connection._protocols[0].transport.get_extra_info("socket")
        # Linux doubles the value; it is capped by net.core.rmem_max
        with open("/proc/sys/net/core/rmem_max") as f:
            cap = int(f.read())
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(1 << 20, cap)
    finally:
        await pc.close()
