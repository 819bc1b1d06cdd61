"""Offers with only one kind of media (no microphone, or an agent without a camera) are
answered, and what was offered still flows."""

from __future__ import annotations

import asyncio
import time

from signaling.media import MediaConfig, MediaManager
from signaling.media.testing import ClientPeer, PatternVideoTrack, SineAudioTrack


async def test_audio_only_and_video_only_offers_are_answered() -> None:
    manager = MediaManager(MediaConfig())
    session = manager.create_session("p" * 32, None)
    customer = ClientPeer(PatternVideoTrack(side=1), None)  # camera, no microphone
    agent = ClientPeer(None, SineAudioTrack(660))  # microphone, no camera
    try:
        await customer.answer(await session.accept_offer("customer", await customer.offer()))
        await agent.answer(await session.accept_offer("agent", await agent.offer()))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
            session.state("customer") == session.state("agent") == "connected"
        ):
            await asyncio.sleep(0.1)
        assert session.state("customer") == "connected"
        assert session.state("agent") == "connected"
        assert not session.ended
    finally:
        await customer.close()
        await agent.close()
        await manager.shutdown()
