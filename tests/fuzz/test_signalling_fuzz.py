"""Hypothesis throws ≥ 10,000 malformed and hostile signalling frames at a live server.

Every frame must be answered with well-formed server frames (errors typed with a known
code), the connection must stay up, nothing may crash, and the server must keep serving a
bystander afterwards. A ping after each frame marks where its answers end.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.protocol import CLIENT_MESSAGE_TYPES, ErrorCode, parse_server_message
from tests.conftest import TEST_PASSWORD, MakeUser
from vbank.app import create_app
from vbank.config import Settings
from vbank.roles import Role

BATCH = 100
EXAMPLES = 100  # 100 × 100 = 10,000 frames
KNOWN_CODES = {c.value for c in ErrorCode}

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
ids = st.text(min_size=0, max_size=80) | st.integers() | st.none()
field_names = st.sampled_from(
    [
        "contact_id",
        "client_id",
        "text",
        "skill",
        "sdp",
        "status",
        "capacity",
        "accept",
        "consent_version",
        "up_to_seq",
        "to_agent_id",
        "to_skill",
        "resume",
        "candidate",
        "sdpMid",
        "sdpMLineIndex",
        "id",
        "v",
        "type",
    ]
)
envelopes = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 0, 2, "1", None]),
        "type": st.sampled_from(sorted(CLIENT_MESSAGE_TYPES)) | st.text(max_size=20),
    },
    optional={"id": ids},
).flatmap(
    lambda env: st.dictionaries(field_names, json_values, max_size=6).map(
        lambda extra: {**extra, **env}
    )
)
hostile_sdp = st.builds(
    lambda body: {"v": 1, "type": "video.offer", "id": "sdp", "contact_id": "c1", "sdp": body},
    st.text(max_size=300) | st.just("v=0\r\n" + "a=x\r\n" * 2000),
)
frames = st.one_of(
    envelopes.map(json.dumps),
    hostile_sdp.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.integers(min_value=1, max_value=2000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=500).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    st.just(
        '{"v":1,"type":"chat.send","contact_id":"x","client_id":"y","text":"' + "z" * 50000 + '"}'
    ),
)


class ServerThread:
    """The real app on its own event loop in a thread, so hypothesis can drive it."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def server(settings: Settings, make_user: MakeUser) -> Iterator[ServerThread]:
    asyncio.run(make_user("fuzzer", Role.CUSTOMER))
    asyncio.run(make_user("bystander", Role.CUSTOMER))
    # limits raised so the flood guard does not hide the parser's behaviour
    app = create_app(replace(settings, ws_rate_scale=10_000.0))
    with ServerThread(app) as srv:
        yield srv


async def _session(port: int, username: str) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    resp = await session.post(
        f"http://127.0.0.1:{port}/api/auth/signin",
        json={"username": username, "password": TEST_PASSWORD},
    )
    assert resp.status == 200
    return session


async def _fire(port: int, batch: list[str]) -> list[dict[str, Any]]:
    session = await _session(port, "fuzzer")
    answers: list[dict[str, Any]] = []
    try:
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws")
        for i, frame in enumerate(batch):
            await ws.send_str(frame)
            marker = f"sentinel-{i}"
            await ws.send_str(json.dumps({"v": 1, "type": "ping", "id": marker}))
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type is aiohttp.WSMsgType.TEXT, (frame[:80], msg)
                parsed = parse_server_message(msg.data)  # well-formed, schema-valid
                data = json.loads(msg.data)
                if data["type"] == "pong" and data.get("id") == marker:
                    break
                if data["type"] == "error":
                    assert data["code"] in KNOWN_CODES
                    assert data["code"] != "internal", (frame[:200], data)
                answers.append({"frame": frame[:80], "reply": parsed.type})
        await ws.close()
    finally:
        await session.close()
    return answers


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(frames, min_size=BATCH, max_size=BATCH))
def test_hostile_frames_get_typed_answers(server: ServerThread, batch: list[str]) -> None:
    answers = asyncio.run(_fire(server.port, batch))
    assert len(answers) >= BATCH * 0.9  # nearly every frame is answered (errors at least)


def test_server_still_serves_after_fuzzing(server: ServerThread) -> None:
    async def check() -> None:
        await _fire(server.port, ["{bad", '{"v":1,"type":"ping"}'])
        session = await _session(server.port, "bystander")
        async with session:
            ws = await session.ws_connect(f"ws://127.0.0.1:{server.port}/ws")
            await ws.send_str(json.dumps({"v": 1, "type": "ping", "id": "p"}))
            assert json.loads((await ws.receive()).data)["type"] == "pong"
            await ws.close()

    asyncio.run(check())
