"""MediaSource fan-out / keyframe rate limit and RelayTrack bounding and gating."""

from __future__ import annotations

import asyncio

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from signaling.media.frames import EncodedFrame
from signaling.media.relay import RelayTrack
from signaling.media.source import MediaSource
from signaling.media.testing import read_pattern

from .conftest import H264, OPUS, VP8, as_encoded


async def recv_bytes(relay: RelayTrack) -> bytes:
    item = await relay.recv()
    assert isinstance(item, av.Packet)
    return bytes(item)


class Requests:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


async def test_keyframe_requests_are_rate_limited_but_never_lost() -> None:
    source = MediaSource("customer", "video", keyframe_min_interval=0.2)
    requests = Requests()
    source.attach(requests)
    source.request_keyframe()
    await asyncio.sleep(0)
    assert requests.count == 1
    for _ in range(5):
        source.request_keyframe()  # merged into one deferred request
    await asyncio.sleep(0.05)
    assert requests.count == 1
    await asyncio.sleep(0.25)
    assert requests.count == 2
    await source.close()
    source.request_keyframe()
    await asyncio.sleep(0)
    assert requests.count == 2


async def test_close_cancels_deferred_request() -> None:
    source = MediaSource("agent", "video", keyframe_min_interval=0.2)
    requests = Requests()
    source.attach(requests)
    source.request_keyframe()
    source.request_keyframe()
    await asyncio.sleep(0)
    await source.close()
    await asyncio.sleep(0.3)
    assert requests.count == 1


async def test_audio_sources_never_request_keyframes() -> None:
    source = MediaSource("agent", "audio")
    requests = Requests()
    source.attach(requests)
    source.request_keyframe()
    await asyncio.sleep(0)
    assert requests.count == 0


async def test_publish_survives_failing_subscriber(vp8_chunks: list[bytes]) -> None:
    class Bad:
        def push(self, item: object) -> None:
            raise RuntimeError("boom")

        def source_ended(self) -> None:
            raise RuntimeError("boom")

    class Good:
        items: list[object] = []
        ended = False

        def push(self, item: object) -> None:
            self.items.append(item)

        def source_ended(self) -> None:
            self.ended = True

    source = MediaSource("customer", "video")
    good = Good()
    source.subscribe(Bad())
    source.subscribe(good)
    source.publish(as_encoded(vp8_chunks[:1], VP8, 15)[0])
    assert len(good.items) == 1
    await source.close()
    assert good.ended


async def test_relay_holds_nothing_until_read(vp8_chunks: list[bytes]) -> None:
    source = MediaSource("customer", "video")
    relay = RelayTrack(source, maxlen=5)
    for frame in as_encoded(vp8_chunks, VP8, 15):
        source.publish(frame)
    assert len(relay._queue) == 0


async def test_relay_starts_at_keyframe_and_forwards_packets(vp8_chunks: list[bytes]) -> None:
    source = MediaSource("customer", "video")
    requests = Requests()
    source.attach(requests)
    relay = RelayTrack(source, maxlen=30)
    relay.set_sink_codec(VP8)
    first = asyncio.ensure_future(relay.recv())
    await asyncio.sleep(0.01)
    assert requests.count == 1  # activation asks for a keyframe
    frames = as_encoded(vp8_chunks, VP8, 15)
    for frame in frames[3:20]:  # starts mid-GOP: frames 3..14 must be skipped
        source.publish(frame)
    packet = await asyncio.wait_for(first, 1)
    assert isinstance(packet, av.Packet)
    assert bytes(packet) == vp8_chunks[15]
    assert packet.pts == frames[15].timestamp
    assert relay.dropped == 12
    relay.stop()


async def test_relay_overflow_restarts_at_next_keyframe(vp8_chunks: list[bytes]) -> None:
    source = MediaSource("customer", "video", keyframe_min_interval=0)
    requests = Requests()
    source.attach(requests)
    relay = RelayTrack(source, maxlen=4)
    relay.set_sink_codec(VP8)
    reader = asyncio.ensure_future(relay.recv())
    await asyncio.sleep(0)
    frames = as_encoded(vp8_chunks, VP8, 15)
    source.publish(frames[0])
    await reader
    for frame in frames[1:10]:  # never read: overflows at the 5th
        source.publish(frame)
    await asyncio.sleep(0)
    assert len(relay._queue) == 0
    assert requests.count >= 2
    source.publish(frames[15])  # keyframe
    source.publish(frames[16])
    assert [await recv_bytes(relay) for _ in range(2)] == [vp8_chunks[15], vp8_chunks[16]]
    relay.stop()


async def test_relay_audio_drops_oldest(opus_chunks: list[bytes]) -> None:
    source = MediaSource("agent", "audio")
    relay = RelayTrack(source, maxlen=3)
    relay.set_sink_codec(OPUS)
    frames = as_encoded(opus_chunks[:10], OPUS, 50)
    reader = asyncio.ensure_future(relay.recv())
    await asyncio.sleep(0)
    source.publish(frames[0])
    await reader
    for frame in frames[1:10]:
        source.publish(frame)
    got = [await recv_bytes(relay) for _ in range(3)]
    assert got == opus_chunks[7:10]
    assert relay.dropped == 6


async def test_relay_ends_with_source(vp8_chunks: list[bytes]) -> None:
    source = MediaSource("customer", "video")
    relay = RelayTrack(source, maxlen=4)
    reader = asyncio.ensure_future(relay.recv())
    await asyncio.sleep(0)
    await source.close()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(reader, 1)
    assert relay.readyState == "ended"


async def test_relay_transcodes_when_sink_codec_differs(vp8_chunks: list[bytes]) -> None:
    source = MediaSource("customer", "video")
    relay = RelayTrack(source, maxlen=30)
    relay.set_sink_codec(H264)
    reader = asyncio.ensure_future(relay.recv())
    await asyncio.sleep(0)
    frames = as_encoded(vp8_chunks[:5], VP8, 15)
    for frame in frames:
        source.publish(frame)
    out = [await reader] + [await relay.recv() for _ in range(4)]
    assert all(isinstance(f, av.VideoFrame) for f in out)
    assert [read_pattern(f) for f in out] == [(1, i) for i in range(5)]  # type: ignore[arg-type]
    assert relay.transcoded == 5
    relay.stop()


def test_encoded_frame_is_immutable(vp8_chunks: list[bytes]) -> None:
    frame: EncodedFrame = as_encoded(vp8_chunks[:1], VP8, 15)[0]
    with pytest.raises(AttributeError):
        frame.data = b""  # type: ignore[misc]
