"""Escalation to video through the websocket and our aiortc media server, with real aiortc
client peers standing in for the two browsers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import av
import pytest

from audit.log import verify_database
from audit.sealed import unseal_to
from signaling.media.testing import ClientPeer, PatternVideoTrack, SineAudioTrack
from tests.conftest import MakeUser
from tests.integration.chat.conftest import assigned_contact, session_events
from vbank.calls import CONSENT_VERSION
from vbank.config import Settings
from vbank.db import Database
from vbank.evidence import keyring_from_settings

pytestmark = [pytest.mark.realtime, pytest.mark.flaky(reruns=2, reruns_delay=2)]


async def _negotiate(peer: Any, client: ClientPeer, contact_id: str) -> None:
    sdp = await client.offer()
    await peer.send("video.offer", contact_id=contact_id, sdp=sdp)
    answer = await peer.wait_type("video.answer", contact_id=contact_id, timeout=15)
    await client.answer(answer["sdp"])


async def test_consent_then_relay_record_and_hangup(
    connect: Any, make_user: MakeUser, db: Database, settings: Settings
) -> None:
    customer, agent, contact_id = await assigned_contact(connect, make_user)

    # no offer before consent
    early = ClientPeer(PatternVideoTrack(side=1), None)
    ref = await customer.send("video.offer", contact_id=contact_id, sdp=await early.offer())
    assert (await customer.wait_type("error", ref_id=ref))["code"] == "out_of_order"
    await early.close()

    await customer.send("video.request", contact_id=contact_id)
    await agent.wait_type("video.requested", contact_id=contact_id, by="customer")
    await agent.send("video.request", contact_id=contact_id)  # the agent accepts
    required = await customer.wait_type("video.consent_required", contact_id=contact_id)
    assert required["consent_version"] == CONSENT_VERSION and "record" in required["consent_text"]
    # the agent cannot consent for the customer
    ref = await agent.send(
        "video.consent", contact_id=contact_id, accept=True, consent_version=CONSENT_VERSION
    )
    assert (await agent.wait_type("error", ref_id=ref))["code"] == "forbidden"
    await customer.send(
        "video.consent", contact_id=contact_id, accept=True, consent_version=CONSENT_VERSION
    )
    await agent.wait_type("video.state", contact_id=contact_id, state="consented")

    cust_peer = ClientPeer(PatternVideoTrack(side=1), SineAudioTrack(440))
    agent_peer = ClientPeer(PatternVideoTrack(side=2), SineAudioTrack(660))
    started = time.monotonic()
    await _negotiate(customer, cust_peer, contact_id)
    await _negotiate(agent, agent_peer, contact_id)
    await customer.wait_type("video.state", contact_id=contact_id, state="live")

    # chat keeps working during video
    await customer.send("chat.send", contact_id=contact_id, client_id="v1", text="can you see me?")
    await agent.wait_type("chat.message", contact_id=contact_id, text="can you see me?")

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        len(agent_peer.video.codes) < 30 or len(cust_peer.video.codes) < 30
    ):
        await asyncio.sleep(0.2)
    # each side sees the *other* side's pattern
    assert len(agent_peer.video.codes) >= 30 and {c[0] for c in agent_peer.video.codes} == {1}
    assert len(cust_peer.video.codes) >= 30 and {c[0] for c in cust_peer.video.codes} == {2}
    counters = [c[1] for c in agent_peer.video.codes]
    assert counters[-1] > counters[0], "frames do not change over time"
    assert agent_peer.audio_frames > 0 and cust_peer.audio_frames > 0
    await asyncio.sleep(2)

    await agent.send("video.hangup", contact_id=contact_id)
    ended = await customer.wait_type("video.ended", contact_id=contact_id, timeout=15)
    call_s = time.monotonic() - started
    assert ended["reason"] == "hangup"
    await cust_peer.close()
    await agent_peer.close()

    events = await session_events(db, contact_id)
    async with db.sessions() as session:
        assert (await verify_database(session)).ok
    types = [e.type for e in events]
    assert types.index("video.consent") < types.index("video.live") < types.index("video.ended")
    for _ in range(100):  # recordings are finalised after both sides were told
        events = await session_events(db, contact_id)
        if sum(e.type == "recording.finalised" for e in events) == 2:
            break
        await asyncio.sleep(0.1)
    recordings = [e for e in events if e.type == "recording.finalised"]
    assert {
        r.payload.count('"side":"customer"') + r.payload.count('"side":"agent"') for r in recordings
    } == {1}
    assert len(recordings) == 2
    root = Path(settings.data_dir) / "recordings"
    # recordings are encrypted at rest: no plaintext left, each envelope named by its event
    assert not [p for p in root.rglob("*.mkv") if p.is_file()]
    keyring = keyring_from_settings(settings)
    for event in recordings:
        payload = json.loads(event.payload)
        sealed = root / payload["file"]
        assert sealed.suffix == ".venv" and sealed.is_file()
        plain = settings.data_dir / f"check-{payload['side']}.mkv"
        digest, size = unseal_to(sealed, keyring, bytes.fromhex(payload["file_id"]), plain)
        assert (digest, size) == (payload["sha256"], payload["bytes"])
        with av.open(str(plain)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.demux(stream) if _.size)
            duration = float(container.duration or 0) / 1_000_000
        assert frames > 10
        # the media flowed for most of the call (negotiation time excluded)
        assert 0.5 * call_s < duration <= call_s * 1.1, (duration, call_s)

    # video can start again after it ended, with a fresh consent
    await customer.send("video.request", contact_id=contact_id)
    await agent.wait_type("video.requested", contact_id=contact_id)


async def test_decline_keeps_the_chat(connect: Any, make_user: MakeUser) -> None:
    customer, agent, contact_id = await assigned_contact(connect, make_user)
    await agent.send("video.request", contact_id=contact_id)
    await customer.wait_type("video.consent_required", contact_id=contact_id)
    await customer.send(
        "video.consent", contact_id=contact_id, accept=False, consent_version=CONSENT_VERSION
    )
    ended = await agent.wait_type("video.ended", contact_id=contact_id)
    assert ended["reason"] == "declined"
    await customer.send("chat.send", contact_id=contact_id, client_id="d1", text="text only please")
    await agent.wait_type("chat.message", text="text only please")


async def test_malformed_sdp_is_refused_and_the_call_can_retry(
    connect: Any, make_user: MakeUser
) -> None:
    customer, agent, contact_id = await assigned_contact(connect, make_user)
    await agent.send("video.request", contact_id=contact_id)
    await customer.wait_type("video.consent_required", contact_id=contact_id)
    await customer.send(
        "video.consent", contact_id=contact_id, accept=True, consent_version=CONSENT_VERSION
    )
    await customer.wait_type("video.state", state="consented")
    ref = await customer.send(
        "video.offer", contact_id=contact_id, sdp="v=0\r\nthis is not sdp\r\n"
    )
    assert (await customer.wait_type("error", ref_id=ref))["code"] == "bad_sdp"
    # the customer's websocket and chat survive
    ref = await customer.send("ping")
    await customer.wait_type("pong", id=ref)


async def test_websocket_loss_ends_the_video_and_frees_media(
    connect: Any, make_user: MakeUser, app: Any
) -> None:
    from vbank.context import SERVICES

    customer, agent, contact_id = await assigned_contact(connect, make_user)
    await agent.send("video.request", contact_id=contact_id)
    await customer.wait_type("video.consent_required", contact_id=contact_id)
    await customer.send(
        "video.consent", contact_id=contact_id, accept=True, consent_version=CONSENT_VERSION
    )
    await customer.wait_type("video.state", state="consented")
    cust_peer = ClientPeer(PatternVideoTrack(side=1), SineAudioTrack(440))
    await _negotiate(customer, cust_peer, contact_id)
    calls = app[SERVICES].realtime.calls
    assert calls.media.get(contact_id) is not None
    await customer.close()  # the customer's browser tab dies
    ended = await agent.wait_type("video.ended", contact_id=contact_id, timeout=15)
    assert ended["reason"] == "disconnect"
    for _ in range(150):
        if calls.media.get(contact_id) is None:
            break
        await asyncio.sleep(0.1)
    assert calls.media.get(contact_id) is None
    await cust_peer.close()
