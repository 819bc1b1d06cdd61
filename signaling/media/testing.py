"""Synthetic media and a Python WebRTC client, for tests and the benchmark.

Not used by the server. The pattern track stamps each frame with a side id and
a frame counter in big black/white blocks that survive lossy coding, so a
receiver can tell whose frame it got and whether frames keep coming in order.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    AudioStreamTrack,
    MediaStreamError,
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.jitterbuffer import JitterFrame

from . import aiortc_hooks as hooks
from .frames import is_keyframe

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
CODE_BITS = 16
COUNTER_BITS = 12
CODE_TOP, CODE_HEIGHT = 8, 32


def pattern_yuv(width: int, height: int, side: int, counter: int) -> npt.NDArray[np.uint8]:
    """A yuv420p image (as PyAV's (H*3/2, W) array) with a moving bar and a code row."""
    img = np.empty((height * 3 // 2, width), dtype=np.uint8)
    y = img[:height]
    y[:] = 60 + 40 * (side % 4)
    bar_w = width // 12
    x0 = (counter * 12) % (width - bar_w)
    y[CODE_TOP + CODE_HEIGHT + 8 :, x0 : x0 + bar_w] = 220
    code = ((side & 0xF) << COUNTER_BITS) | (counter & ((1 << COUNTER_BITS) - 1))
    block = width // CODE_BITS
    for bit in range(CODE_BITS):
        on = (code >> (CODE_BITS - 1 - bit)) & 1
        y[CODE_TOP : CODE_TOP + CODE_HEIGHT, bit * block : (bit + 1) * block] = 235 if on else 16
    img[height:] = 128
    return img


def read_pattern(frame: av.VideoFrame) -> tuple[int, int]:
    """(side, counter) stamped by :func:`pattern_yuv` into ``frame``."""
    y = frame.to_ndarray(format="gray")
    block = frame.width // CODE_BITS
    rows = y[CODE_TOP + 8 : CODE_TOP + CODE_HEIGHT - 8]
    code = 0
    for bit in range(CODE_BITS):
        cell = rows[:, bit * block + block // 4 : (bit + 1) * block - block // 4]
        code = (code << 1) | int(cell.mean() > 128)
    return code >> COUNTER_BITS, code & ((1 << COUNTER_BITS) - 1)


class _Pacer:
    """Real-time pacing shared by the synthetic tracks."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.start: float | None = None
        self.index = 0

    async def tick(self) -> int:
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.index += 1
            delay = self.start + self.index * self.period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return self.index


class PatternVideoTrack(VideoStreamTrack):
    """Camera stand-in: :func:`pattern_yuv` frames at ``fps``."""

    def __init__(self, side: int, fps: float = 15, width: int = 640, height: int = 480) -> None:
        super().__init__()
        self.side, self.width, self.height = side, width, height
        self._pacer = _Pacer(1 / fps)
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pacer.tick()
        frame = av.VideoFrame.from_ndarray(
            pattern_yuv(self.width, self.height, self.side, index), format="yuv420p"
        )
        frame.pts = round(index * self._pacer.period * VIDEO_CLOCK)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        return frame


class ClipVideoTrack(VideoStreamTrack):
    """A real video file as a camera: its frames decoded once, replayed in a loop at the
    file's rate with steadily increasing timestamps (a camera never restarts its clock)."""

    def __init__(self, path: str, max_frames: int = 600) -> None:
        super().__init__()
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 30)
            self._frames = []
            for frame in container.decode(stream):
                self._frames.append(frame.reformat(format="yuv420p"))
                if len(self._frames) >= max_frames:
                    break
        if not self._frames:
            raise ValueError(f"no video frames in {path}")
        self._pacer = _Pacer(1 / rate)
        self._rate = rate
        self.index = 0

    async def recv(self) -> av.VideoFrame:
        n = await self._pacer.tick()
        src = self._frames[n % len(self._frames)]
        frame = av.VideoFrame.from_ndarray(src.to_ndarray(), format="yuv420p")
        frame.pts = n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self.index = n
        return frame


class SineAudioTrack(AudioStreamTrack):
    """Microphone stand-in: a sine tone, 20 ms mono frames at 48 kHz."""

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._pacer = _Pacer(0.02)
        self._samples = AUDIO_RATE // 50

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pacer.tick()
        t = (np.arange(self._samples) + index * self._samples) / AUDIO_RATE
        pcm = (np.sin(2 * math.pi * self.frequency * t) * self.amplitude * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = index * self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class PacketTrack(MediaStreamTrack):
    """Replays pre-encoded frames in a loop (no encoding cost), for the benchmark."""

    def __init__(self, kind: str, frames: list[bytes], period: float, clock: int) -> None:
        super().__init__()
        self.kind = kind
        self._frames = frames
        self._pacer = _Pacer(period)
        self._clock = clock

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pacer.tick()
        packet = av.Packet(self._frames[index % len(self._frames)])
        packet.pts = round(index * self._pacer.period * self._clock)
        packet.time_base = fractions.Fraction(1, self._clock)
        return packet


def encode_vp8(
    frames: Iterable[av.VideoFrame], fps: int = 30, bitrate: int = 1_000_000, gop: int = 60
) -> list[bytes]:
    """VP8-encode frames the way a browser would (realtime, CBR-ish), keyframe every ``gop``."""
    ctx = av.CodecContext.create("libvpx", "w")
    out: list[bytes] = []
    for i, frame in enumerate(frames):
        if not out and i == 0:
            ctx.width, ctx.height = frame.width, frame.height
            ctx.pix_fmt = "yuv420p"
            ctx.time_base = fractions.Fraction(1, fps)
            ctx.bit_rate = bitrate
            ctx.gop_size = gop
            ctx.thread_count = 1  # libvpx threading is far slower on a busy 2-core box
            ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        f = frame.reformat(format="yuv420p")
        f.pts = i
        f.time_base = fractions.Fraction(1, fps)
        out.extend(bytes(p) for p in ctx.encode(f))
    out.extend(bytes(p) for p in ctx.encode(None))
    return out


def encode_opus_sine(seconds: float = 2.0, frequency: float = 440.0) -> list[bytes]:
    """20 ms Opus packets of a sine tone."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_RATE
    ctx.format = "s16"
    ctx.layout = "stereo"
    ctx.time_base = fractions.Fraction(1, AUDIO_RATE)
    out: list[bytes] = []
    n = AUDIO_RATE // 50
    for i in range(int(seconds * 50)):
        t = (np.arange(n) + i * n) / AUDIO_RATE
        s = (np.sin(2 * math.pi * frequency * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(s, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = i * n
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


@dataclass
class ReceivedVideo:
    """What a client saw of the server's video (bounded by the test's length)."""

    arrivals: list[float] = field(default_factory=list)
    codes: list[tuple[int, int]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    keyframes: int = 0


class ClientPeer:
    """A browser stand-in: one aiortc peer connection to the server.

    ``decode=False`` counts encoded frames via the receiver hook instead of
    decoding (benchmark clients, so that client CPU does not skew the numbers).
    """

    def __init__(
        self,
        video: MediaStreamTrack | None,
        audio: MediaStreamTrack | None,
        *,
        decode: bool = True,
        video_codec: str | None = None,
    ) -> None:
        self.pc = RTCPeerConnection()
        self.decode = decode
        self.video = ReceivedVideo()
        self.audio_frames = 0
        self.audio_peak = 0.0
        self.audio_arrivals: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        for track in (audio, video):
            if track is not None:
                transceiver = self.pc.addTransceiver(track, direction="sendrecv")
                if track.kind == "video" and video_codec is not None:
                    caps = RTCRtpSender.getCapabilities("video").codecs
                    transceiver.setCodecPreferences(
                        [
                            c
                            for c in caps
                            if c.mimeType.lower() in (video_codec.lower(), "video/rtx")
                        ]
                    )
        self.pc.on("track", self._on_track)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        hooks.set_udp_buffers(self.pc, 1 << 20)  # as browsers do
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def reset_counts(self) -> None:
        self.video = ReceivedVideo()
        self.audio_frames = 0
        self.audio_arrivals = []

    def _on_track(self, track: MediaStreamTrack) -> None:
        if not self.decode:
            receiver = next(
                t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track
            )
            hooks.install_encoded_frame_hook(receiver, self._count_encoded)
            return
        task = asyncio.ensure_future(self._consume(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count_encoded(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        now = time.monotonic()
        if codec.mimeType.lower().startswith("video/"):
            self.video.arrivals.append(now)
            if is_keyframe(codec.name, frame.data):
                self.video.keyframes += 1
        else:
            self.audio_frames += 1

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if isinstance(frame, av.VideoFrame):
                self.video.arrivals.append(now)
                self.video.sizes.append((frame.width, frame.height))
                self.video.codes.append(read_pattern(frame))
            elif isinstance(frame, av.AudioFrame):
                self.audio_frames += 1
                self.audio_arrivals.append(now)
                pcm = frame.to_ndarray()
                self.audio_peak = max(self.audio_peak, float(np.abs(pcm).max()) / 32768)

    async def close(self) -> None:
        await self.pc.close()
        for task in tuple(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
