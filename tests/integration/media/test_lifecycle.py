"""Joining late, every way a call ends, codec combinations."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aioice.ice
import av
import pytest

from signaling.media import MediaConfig, MediaManager, MediaStateError, NegotiationError
from signaling.media.session import ROLES

from .conftest import (
    AGENT_SIDE,
    CUSTOMER_SIDE,
    CallFactory,
    make_client,
    media_threads,
    settle_tasks,
    wait_until,
)


def video_codec(path: Path) -> str:
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


def decoded_video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_late_joiner_gets_media_at_a_keyframe(make_call: CallFactory) -> None:
    call = await make_call(join=("customer",))
    session = call.session
    await wait_until(lambda: session.state("customer") == "connected")
    await asyncio.sleep(1.5)  # customer's keyframe is long gone
    assert call.customer.video.codes == []
    await call.join("agent")
    await wait_until(lambda: session.state("agent") == "connected")
    joined = time.monotonic()
    await wait_until(
        lambda: len(call.agent.video.codes) >= 5 and len(call.customer.video.codes) >= 5
    )
    # first frame the agent got decodes to the customer's pattern: relay waited for a keyframe
    assert call.agent.video.codes[0][0] == CUSTOMER_SIDE
    assert call.agent.video.codes[0][1] >= 20
    assert call.agent.video.arrivals[0] - joined < 1.5
    assert (
        call.customer.video.codes[0] == (AGENT_SIDE, 0)
        or call.customer.video.codes[0][0] == AGENT_SIDE
    )
    await session.close("done")
    assert decoded_video_frames(session.recordings["customer"].path) >= 30


async def test_remote_hangup_ends_session(make_call: CallFactory) -> None:
    tasks_before = set(asyncio.all_tasks())
    call = await make_call()
    session = call.session
    await wait_until(lambda: session.state("agent") == "connected")
    await asyncio.sleep(1.0)
    await call.agent.close()
    assert await asyncio.wait_for(session.wait_ended(), 10) == "agent_closed"
    assert call.ended == ["agent_closed"]
    assert ("agent", "closed") in call.states and ("customer", "closed") in call.states
    assert all(info.exists and info.error is None for info in session.recordings.values())
    assert all(session.peer_connection(r).connectionState == "closed" for r in ROLES)  # type: ignore[union-attr]
    await call.close_clients()
    assert not await settle_tasks(tasks_before)


async def test_ice_failure_ends_session(
    make_call: CallFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    tasks_before = set(asyncio.all_tasks())
    call = await make_call()
    session = call.session
    await wait_until(lambda: session.state("customer") == "connected")
    await asyncio.sleep(0.5)
    # the customer's network vanishes: no DTLS close, no RTCP BYE, just silence
    ice = call.customer.pc.getTransceivers()[0].receiver.transport.transport
    await ice._connection.close()
    assert await asyncio.wait_for(session.wait_ended(), 10) == "customer_failed"
    assert session.recordings["customer"].exists and session.recordings["agent"].exists
    await call.close_clients()
    assert not await settle_tasks(tasks_before)


async def test_connect_timeout_ends_session(make_call: CallFactory) -> None:
    call = await make_call(join=("customer",), connect_timeout=1.0)
    session = call.session
    await session.accept_offer("agent", await call.agent.offer())  # answer never applied
    assert await asyncio.wait_for(session.wait_ended(), 10) == "agent_connect_timeout"
    assert session.state("customer") == "closed"


async def test_manager_shutdown_ends_every_session(tmp_path: Path) -> None:
    tasks_before = set(asyncio.all_tasks())
    threads_before = media_threads()
    manager = MediaManager(MediaConfig())
    clients = []
    ended: list[str] = []
    for i in range(2):
        session = manager.create_session(f"s{i}", tmp_path / f"s{i}", on_ended=ended.append)
        for role, side in (("customer", CUSTOMER_SIDE), ("agent", AGENT_SIDE)):
            client = make_client(side)
            clients.append(client)
            await client.answer(await session.accept_offer(role, await client.offer()))  # type: ignore[arg-type]
    sessions = list(manager.sessions.values())
    await wait_until(lambda: all(s.state("agent") == "connected" for s in sessions))
    await asyncio.sleep(1.5)
    await manager.shutdown()
    assert ended == ["shutdown", "shutdown"] and manager.sessions == {}
    for s in sessions:
        assert all(info.exists and info.video_frames > 0 for info in s.recordings.values())
    with pytest.raises(MediaStateError):
        manager.create_session("late", tmp_path / "late")
    for client in clients:
        await client.close()
    assert not await settle_tasks(tasks_before)
    assert media_threads() == threads_before


async def test_bad_offer_and_repeated_offer(make_call: CallFactory) -> None:
    call = await make_call(join=("customer",))
    with pytest.raises(MediaStateError):
        await call.session.accept_offer("customer", await call.agent.offer())
    with pytest.raises(NegotiationError):
        await call.session.accept_offer("agent", "v=0\r\nnonsense\r\n")
    assert call.session.end_reason == "agent_negotiation_failed"
    assert call.ended == ["agent_negotiation_failed"]


async def test_h264_is_forwarded_without_transcoding(make_call: CallFactory) -> None:
    call = await make_call(customer_codec="video/H264", agent_codec="video/H264")
    session = call.session
    await wait_until(
        lambda: len(call.agent.video.codes) >= 15 and len(call.customer.video.codes) >= 15
    )
    relay = session.relay("agent", "video")
    assert relay is not None and relay.sent >= 15 and relay.transcoded == 0
    frame = await asyncio.wait_for(session.tap.next_frame(), 5)
    assert read_side(frame.frame) == CUSTOMER_SIDE
    await session.close("done")
    assert video_codec(session.recordings["customer"].path) == "h264"


async def test_codec_mismatch_is_transcoded(make_call: CallFactory) -> None:
    call = await make_call(customer_codec="video/H264", agent_codec="video/VP8")
    session = call.session
    await wait_until(
        lambda: len(call.agent.video.codes) >= 15 and len(call.customer.video.codes) >= 15
    )
    assert {s for s, _ in call.agent.video.codes} == {CUSTOMER_SIDE}
    assert {s for s, _ in call.customer.video.codes} == {AGENT_SIDE}
    to_agent, to_customer = session.relay("agent", "video"), session.relay("customer", "video")
    assert to_agent is not None and to_agent.transcoded >= 15
    assert to_customer is not None and to_customer.transcoded >= 15
    await session.close("done")
    recordings = session.recordings
    assert video_codec(recordings["customer"].path) == "h264"
    assert video_codec(recordings["agent"].path) == "vp8"


def read_side(frame: av.VideoFrame) -> int:
    from signaling.media.testing import read_pattern

    return read_pattern(frame)[0]
