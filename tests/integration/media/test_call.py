"""A whole call with real aiortc peers: relay both ways, record both sides, tap, clean up."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import av
import pytest

from signaling.media.recorder import RecordingInfo
from signaling.media.testing import ClientPeer, read_pattern

from .conftest import (
    AGENT_SIDE,
    CUSTOMER_SIDE,
    Call,
    CallFactory,
    media_threads,
    settle_tasks,
    wait_until,
)

MEDIA_S = 4.0


def probe(path: Path) -> tuple[float, dict[str, str]]:
    with av.open(str(path)) as container:
        codecs: dict[str, str] = {str(s.type): s.codec_context.name for s in container.streams}
        return (container.duration or 0) / 1e6, codecs


def fps_in_window(arrivals: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in arrivals) / (end - start)


def check_received(
    client: ClientPeer, other_side: int, window: tuple[float, float], min_fps: float
) -> None:
    codes = client.video.codes
    assert codes, "no video received"
    assert {side for side, _ in codes} == {other_side}, "received someone else's video"
    counters = [c for _, c in codes]
    assert all(b > a for a, b in itertools.pairwise(counters)), "frames out of order"
    assert counters[-1] - counters[0] >= MEDIA_S * 10, "content did not move"
    assert fps_in_window(client.video.arrivals, *window) >= min_fps
    assert client.audio_frames >= 50 * MEDIA_S * 0.5
    assert client.audio_peak > 0.1, "audio is silent"


def check_recording(call: Call, info: RecordingInfo, closed_at: float) -> None:
    assert info.exists and info.error is None
    duration, codecs = probe(info.path)
    assert codecs == {"video": "vp8", "audio": "opus"}
    expected = closed_at - call.connected_at(info.path.stem)  # type: ignore[arg-type]
    assert duration == pytest.approx(expected, rel=0.10)


@pytest.mark.parametrize("forward", [True, False], ids=["forward", "decode"])
async def test_call_relays_records_and_taps(make_call: CallFactory, forward: bool) -> None:
    tasks_before = set(asyncio.all_tasks())
    threads_before = media_threads()
    # decode mode transcodes everything in this one process: keep its frames small
    size = (640, 480) if forward else (320, 240)
    call = await make_call(forward_encoded=forward, size=size)
    session = call.session
    await wait_until(lambda: session.state("customer") == session.state("agent") == "connected")

    first = await asyncio.wait_for(session.tap.next_frame(), 5)
    assert read_pattern(first.frame)[0] == CUSTOMER_SIDE
    assert (first.width, first.height) == size
    assert first.to_rgb().shape == (size[1], size[0], 3)

    await asyncio.sleep(MEDIA_S)
    later = await asyncio.wait_for(session.tap.next_frame(after_ts=first.timestamp), 5)
    assert later.timestamp > first.timestamp + 2
    assert read_pattern(later.frame)[1] > read_pattern(first.frame)[1]
    assert session.tap.buffered <= session.config.tap_max_chain

    closed_at = time.monotonic()
    window = (closed_at - 3.2, closed_at - 0.2)
    await session.close("hangup")
    assert call.ended == ["hangup"] and session.end_reason == "hangup"

    # 15 fps sent; lenient because both clients encode and decode in this same process
    min_fps = 9 if forward else 5
    check_received(call.customer, AGENT_SIDE, window, min_fps)
    check_received(call.agent, CUSTOMER_SIDE, window, min_fps)

    for role in ("customer", "agent"):
        pc = session.peer_connection(role)
        assert pc is not None and pc.connectionState == "closed"
        check_recording(call, session.recordings[role], closed_at)

    await call.close_clients()
    assert not await settle_tasks(tasks_before)
    assert media_threads() == threads_before
    with pytest.raises(Exception, match="ended"):
        await session.accept_offer("customer", "v=0")
