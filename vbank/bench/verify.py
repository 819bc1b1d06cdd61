"""`vbank bench verify`: does a running face verification slow signalling down?

A real app on loopback, a customer streaming a real face clip through our media server, an
agent running a verification. A third websocket pings the server every 20 ms: round-trip
times while the call is live but idle are the baseline, measured in the same run as those
during the verification (face work runs in a process pool, so the event loop should not
notice it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiohttp import web
from sqlalchemy import select

from signaling.media.testing import ClientPeer, PacketTrack, encode_opus_sine, encode_vp8
from vbank.app import create_app
from vbank.auth.passwords import Passwords
from vbank.auth.users import create_user
from vbank.calls import CONSENT_VERSION
from vbank.config import Settings
from vbank.db import Database
from vbank.demo import FACES_DIR, store_reference_photo
from vbank.evidence import EvidenceStore
from vbank.migrate import upgrade
from vbank.models import User
from vbank.roles import Role

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests/data/faces/video/KwaiVGI__LivePortrait/assets/examples/driving/d18.mp4"
PASSWORD = "bench-password-1"  # noqa: S105 - a throw-away user in a temporary database


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def open(self, username: str) -> aiohttp.ClientWebSocketResponse:
        resp = await self.session.post(
            f"http://127.0.0.1:{self.port}/api/auth/signin",
            json={"username": username, "password": PASSWORD},
        )
        assert resp.status == 200, await resp.text()
        ws = await self.session.ws_connect(f"ws://127.0.0.1:{self.port}/ws")
        self.ws = ws
        self._reader = asyncio.create_task(self._read())
        await self.send("hello", resume={})
        return ws

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self.frames.put(json.loads(msg.data))

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send_str(json.dumps({"v": 1, "type": type_, **fields}))

    async def wait(self, type_: str, limit_s: float = 60, **match: Any) -> dict[str, Any]:
        async with asyncio.timeout(limit_s):
            while True:
                f = await self.frames.get()
                if f.get("type") == type_ and all(f.get(k) == v for k, v in match.items()):
                    return f


async def _pinger(port: int, username: str, stop: asyncio.Event, out: list[float]) -> None:
    c = Client(port)
    await c.open(username)
    await c.wait("welcome")
    i = 0
    while not stop.is_set():
        i += 1
        t0 = time.perf_counter()
        await c.send("ping", id=f"p{i}")
        await c.wait("pong", id=f"p{i}")
        out.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.02)
    await c.session.close()


def _encoded_clip() -> tuple[list[bytes], list[bytes]]:
    with av.open(str(CLIP)) as container:
        frames = list(container.decode(video=0))
    # gop 30: a keyframe each second, so the tap can start decoding quickly
    return encode_vp8(frames, fps=30, gop=30), encode_opus_sine(2.0)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def _run(tmp: Path, idle_s: float) -> dict[str, Any]:
    url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    upgrade(url)
    settings = Settings(
        data_dir=tmp,
        database_url=url,
        secret_key=secrets.token_urlsafe(48),
        master_keys=(("bench", secrets.token_bytes(32)),),
        verify_fixed_steps=("blink",),
        ws_rate_scale=1000.0,  # the pinger exceeds the per-connection ping limit on purpose
        verify_time_limit_s=30.0,
        password_time_cost=1,
        password_memory_kib=8 * 1024,
    )
    db = Database(url)
    passwords = Passwords(1, 8 * 1024)
    async with db.transaction() as session:
        for name, role in (("cust", Role.CUSTOMER), ("ana", Role.AGENT), ("pinger", Role.AGENT)):
            await create_user(
                session,
                passwords,
                username=name,
                password=PASSWORD,
                role=role,
                skills=("accounts",) if role is Role.AGENT else (),
            )
        user = await session.scalar(select(User).where(User.username == "cust"))
        assert user is not None
        await store_reference_photo(
            session, EvidenceStore.from_settings(settings), user, FACES_DIR / "liveportrait_d18.jpg"
        )
    await db.close()

    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    customer, agent = Client(port), Client(port)
    peers: list[ClientPeer] = []
    try:
        await customer.open("cust")
        await agent.open("ana")
        await agent.send("agent.status", status="available")
        await customer.send("contact.start", skill="accounts", id="s1")
        contact_id = (await customer.wait("ack", id="s1"))["contact_id"]
        await agent.wait("contact.assigned", contact_id=contact_id)
        await agent.send("video.request", contact_id=contact_id)
        await customer.wait("video.consent_required")
        await customer.send(
            "video.consent", contact_id=contact_id, accept=True, consent_version=CONSENT_VERSION
        )
        # pre-encoded media: the clients' encoders must not share the server's event loop
        video, audio = await asyncio.to_thread(_encoded_clip)
        customer_peer = ClientPeer(
            PacketTrack("video", video, 1 / 30, 90000),
            PacketTrack("audio", audio, 0.02, 48000),
            decode=False,
        )
        agent_peer = ClientPeer(None, PacketTrack("audio", audio, 0.02, 48000), decode=False)
        for client, peer in ((customer, customer_peer), (agent, agent_peer)):
            peers.append(peer)
            await client.send("video.offer", contact_id=contact_id, sdp=await peer.offer())
            await peer.answer((await client.wait("video.answer"))["sdp"])
        await agent.wait("video.state", state="live")
        await asyncio.sleep(3)  # let the pool warm up (it starts when the call goes live)

        idle: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(_pinger(port, "pinger", stop, idle))
        await asyncio.sleep(idle_s)
        stop.set()
        await task

        during: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(_pinger(port, "pinger", stop, during))
        t0 = time.perf_counter()
        await agent.send("verify.start", contact_id=contact_id, reference="on_file")
        result = await agent.wait("verify.result", limit_s=120)
        verify_s = time.perf_counter() - t0
        stop.set()
        await task
    finally:
        for peer in peers:
            await peer.close()
        await customer.session.close()
        await agent.session.close()
        await runner.cleanup()
    return {
        "idle_pings": len(idle),
        "idle_p50_ms": _pct(idle, 0.5),
        "idle_p99_ms": _pct(idle, 0.99),
        "during_pings": len(during),
        "during_p50_ms": _pct(during, 0.5),
        "during_p99_ms": _pct(during, 0.99),
        "during_mean_ms": round(statistics.fmean(during), 2) if during else 0.0,
        "verify_s": round(verify_s, 2),
        "match": result["match"],
        "distance": result["distance"],
        "liveness_passed": result["liveness_passed"],
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_run(Path(tmp), args.seconds))
