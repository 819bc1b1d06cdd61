"""A real call through the websocket and our aiortc media server, then reviewed by an
auditor through the API: found by search, timeline in order, recordings playable."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import av
from aiohttp.test_utils import TestServer

from signaling.media.testing import ClientPeer, PatternVideoTrack, SineAudioTrack
from tests.auditor.conftest import events_of, signed_client
from tests.conftest import MakeUser
from tests.integration.chat.conftest import (  # noqa: F401 (fixtures)
    assigned_contact,
    connect,
    server,
    session_events,
)
from vbank.calls import CONSENT_VERSION
from vbank.db import Database
from vbank.roles import Role


async def _negotiate(peer: Any, client: ClientPeer, contact_id: str) -> None:
    sdp = await client.offer()
    await peer.send("video.offer", contact_id=contact_id, sdp=sdp)
    answer = await peer.wait_type("video.answer", contact_id=contact_id, timeout=15)
    await client.answer(answer["sdp"])


async def test_a_recorded_call_is_found_shown_and_played(
    connect: Any,  # noqa: F811
    make_user: MakeUser,
    db: Database,
    aiohttp_client: Any,
    server: TestServer,  # noqa: F811
) -> None:
    customer, agent, contact_id = await assigned_contact(connect, make_user)
    await customer.send("chat.send", contact_id=contact_id, client_id="a1", text="hello bank")
    await agent.wait_type("chat.message", contact_id=contact_id, text="hello bank")
    await agent.send("video.request", contact_id=contact_id)
    await customer.wait_type("video.consent_required", contact_id=contact_id)
    await customer.send(
        "video.consent", contact_id=contact_id, accept=True, consent_version=CONSENT_VERSION
    )
    await agent.wait_type("video.state", contact_id=contact_id, state="consented")
    cust_peer = ClientPeer(PatternVideoTrack(side=1), SineAudioTrack(440))
    agent_peer = ClientPeer(PatternVideoTrack(side=2), SineAudioTrack(660))
    await _negotiate(customer, cust_peer, contact_id)
    await _negotiate(agent, agent_peer, contact_id)
    await customer.wait_type("video.state", contact_id=contact_id, state="live")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(agent_peer.video.codes) < 45:
        await asyncio.sleep(0.2)
    await agent.send("video.hangup", contact_id=contact_id)
    await customer.wait_type("video.ended", contact_id=contact_id, timeout=15)
    await cust_peer.close()
    await agent_peer.close()
    for _ in range(100):
        if len(await events_of(db, contact_id, "recording.finalised")) == 2:
            break
        await asyncio.sleep(0.1)

    await make_user("audrey", Role.AUDITOR)
    auditor = await signed_client(aiohttp_client, server, "audrey")
    resp = await auditor.get("/api/auditor/sessions", params={"customer": "cust"})
    [row] = (await resp.json())["sessions"]
    assert row["contact_id"] == contact_id
    assert (row["messages"], row["recordings"]) == (1, 2)
    assert row["agent"]["name"] == "ana"

    body = await (await auditor.get(f"/api/auditor/sessions/{contact_id}")).json()
    stored = [e.seq for e in await session_events(db, contact_id)]
    # every event of the contact, in order (the view's own event comes after the read)
    assert [e["seq"] for e in body["events"]] == stored[:-1]
    types = [e["type"] for e in body["events"]]
    assert types.index("chat.message") < types.index("video.consent")
    assert types.index("video.consent") < types.index("video.live") < types.index("video.ended")
    assert types.index("video.ended") < types.index("recording.finalised")
    [chat] = [e["chat"] for e in body["events"] if e["type"] == "chat.message"]
    assert chat["text"] == "hello bank" and chat["text_matches"]
    [consent] = [e["consent"] for e in body["events"] if e["type"] == "video.consent"]
    assert consent["version"] == CONSENT_VERSION and consent["accepted"] is True
    sides = {r["side"]: r for r in body["recordings"]}
    assert set(sides) == {"customer", "agent"}

    for side, rec in sides.items():
        resp = await auditor.get(rec["url"])
        assert resp.status == 200, side
        data = await resp.read()
        assert len(data) == int(resp.headers["Content-Length"]) > 1000
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for packet in container.demux(stream) if packet.size)
        assert frames > 10, side
        resp = await auditor.get(rec["url"], headers={"Range": "bytes=100-199"})
        assert resp.status == 206 and await resp.read() == data[100:200]

    played = [json.loads(e.payload) for e in await events_of(db, contact_id, "auditor.playback")]
    assert sorted(p["side"] for p in played) == ["agent", "customer"]
    [viewed] = await events_of(db, contact_id, "auditor.viewed")
    assert json.loads(viewed.payload)["what"] == "timeline"
