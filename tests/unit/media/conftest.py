"""Encoded test media shared by the media unit tests (made once per session)."""

from __future__ import annotations

import fractions
import time

import av
import pytest
from aiortc import RTCRtpCodecParameters

from signaling.media.frames import EncodedFrame, is_keyframe
from signaling.media.testing import encode_opus_sine, encode_vp8, pattern_yuv

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
H264 = RTCRtpCodecParameters(
    mimeType="video/H264",
    clockRate=90000,
    payloadType=99,
    parameters={"packetization-mode": "1", "profile-level-id": "42e01f"},
)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)


def pattern_frames(
    n: int, side: int = 1, size: tuple[int, int] = (640, 480)
) -> list[av.VideoFrame]:
    return [
        av.VideoFrame.from_ndarray(pattern_yuv(size[0], size[1], side, i), format="yuv420p")
        for i in range(n)
    ]


def encode_h264(frames: list[av.VideoFrame], fps: int = 15) -> list[bytes]:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = frames[0].width, frames[0].height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    ctx.profile = "Baseline"
    out: list[bytes] = []
    for i, f in enumerate(frames):
        f.pts = i
        f.time_base = fractions.Fraction(1, fps)
        out.extend(bytes(p) for p in ctx.encode(f))
    out.extend(bytes(p) for p in ctx.encode(None))
    return out


def as_encoded(
    chunks: list[bytes], codec: RTCRtpCodecParameters, fps: float, start: float | None = None
) -> list[EncodedFrame]:
    """Frames as the receive hook would publish them, with evenly spaced arrivals."""
    start = time.monotonic() if start is None else start
    kind = "video" if codec.mimeType.startswith("video") else "audio"
    step = codec.clockRate / fps
    return [
        EncodedFrame(
            kind=kind,  # type: ignore[arg-type]
            codec=codec,
            data=data,
            timestamp=round(i * step),
            keyframe=is_keyframe(codec.name, data),
            arrival=start + i / fps,
        )
        for i, data in enumerate(chunks)
    ]


@pytest.fixture(scope="session")
def vp8_chunks() -> list[bytes]:
    """3 s of 15 fps VP8 pattern video, keyframe every 15 frames."""
    return encode_vp8(pattern_frames(45), fps=15, gop=15)


@pytest.fixture(scope="session")
def h264_chunks() -> list[bytes]:
    return encode_h264(pattern_frames(30))


@pytest.fixture(scope="session")
def opus_chunks() -> list[bytes]:
    return encode_opus_sine(3.0)
