"""LatestFrameTap: latest frame only, bounded, decodes on demand."""

from __future__ import annotations

import asyncio
import fractions

import pytest

from signaling.media.frames import DecodedFrame
from signaling.media.tap import LatestFrameTap, TapClosedError
from signaling.media.testing import read_pattern

from .conftest import OPUS, VP8, as_encoded, pattern_frames


class Requests:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def test_next_frame_decodes_the_latest(vp8_chunks: list[bytes]) -> None:
    requests = Requests()
    tap = LatestFrameTap(requests)
    frames = as_encoded(vp8_chunks, VP8, 15)
    for frame in frames[:10]:
        tap.push(frame)
    got = await asyncio.wait_for(tap.next_frame(), 2)
    assert read_pattern(got.frame) == (1, 9)
    assert got.timestamp == pytest.approx(9 / 15)
    assert got.to_rgb().shape == (480, 640, 3)
    assert tap.latest() is got
    assert tap.decoded_frames == 10
    assert requests.count == 0


async def test_next_frame_waits_for_newer_than_after_ts(vp8_chunks: list[bytes]) -> None:
    tap = LatestFrameTap(Requests())
    frames = as_encoded(vp8_chunks, VP8, 15)
    tap.push(frames[0])
    first = await tap.next_frame()
    waiter = asyncio.ensure_future(tap.next_frame(after_ts=first.timestamp))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    tap.push(frames[1])
    tap.push(frames[2])
    second = await asyncio.wait_for(waiter, 2)
    assert read_pattern(second.frame) == (1, 2)
    assert second.timestamp > first.timestamp


async def test_chain_is_bounded_and_overflow_asks_for_keyframe(vp8_chunks: list[bytes]) -> None:
    requests = Requests()
    tap = LatestFrameTap(requests, max_chain=8)
    frames = as_encoded(vp8_chunks, VP8, 15)
    for _round in range(20):
        for frame in frames[1:15]:  # delta frames only: chain never starts
            tap.push(frame)
        assert tap.buffered == 0
    tap.push(frames[0])
    for frame in frames[1:15]:
        tap.push(frame)
        assert tap.buffered <= 8
    assert tap.buffered == 0  # overflowed: dropped, waiting for a keyframe
    waiter = asyncio.ensure_future(tap.next_frame())
    await asyncio.sleep(0.05)
    assert requests.count == 1 and not waiter.done()
    tap.push(frames[15])  # keyframe
    got = await asyncio.wait_for(waiter, 2)
    assert read_pattern(got.frame) == (1, 15)
    assert tap.decoded_frames == 1


async def test_ignores_audio_and_accepts_decoded_frames(opus_chunks: list[bytes]) -> None:
    tap = LatestFrameTap(Requests())
    tap.push(as_encoded(opus_chunks[:1], OPUS, 50)[0])
    assert tap.buffered == 0
    frame = pattern_frames(1, side=3)[0]
    frame.pts, frame.time_base = 9000, fractions.Fraction(1, 90000)
    tap.push(DecodedFrame("video", frame, 1.0))
    got = await asyncio.wait_for(tap.next_frame(), 1)
    assert got.frame is frame and got.timestamp == pytest.approx(0.1)
    assert tap.decoded_frames == 0


async def test_close_wakes_waiters() -> None:
    tap = LatestFrameTap(Requests())
    waiter = asyncio.ensure_future(tap.next_frame())
    await asyncio.sleep(0.01)
    tap.close()
    with pytest.raises(TapClosedError):
        await asyncio.wait_for(waiter, 1)
    with pytest.raises(TapClosedError):
        await tap.next_frame()


async def test_corrupt_frame_resyncs_on_keyframe(vp8_chunks: list[bytes]) -> None:
    requests = Requests()
    tap = LatestFrameTap(requests)
    frames = as_encoded(vp8_chunks, VP8, 15)
    bad = as_encoded([vp8_chunks[0][:20]], VP8, 15)[0]
    tap.push(bad)  # a truncated keyframe: does not decode
    waiter = asyncio.ensure_future(tap.next_frame())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if tap.decode_errors:
            break
    assert tap.decode_errors == 1 and requests.count >= 1
    tap.push(frames[15])
    got = await asyncio.wait_for(waiter, 2)
    assert read_pattern(got.frame) == (1, 15)
