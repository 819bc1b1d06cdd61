"""``vbank bench signalling``: chat over the real websocket vs a bare aiohttp relay.

Why a baseline in the same run: these machines are shared and noisy, so an absolute
messages/s figure says little; the ratio to a relay that does no auth, no validation and
no persistence on the same machine at the same moment says what vbank's work costs.

Set-up is not timed: a scratch SQLite file (or the schema created in ``--database-url``),
``clients/2`` customers and agents with sign-in sessions and one assigned contact per pair,
all inserted directly (one Argon2 hash, reused). The real app then runs in this process
and the clients in a spawned one (:mod:`vbank.bench._load`), first against vbank, then
against the relay. Set ``VBANK_BENCH_PROFILE=FILE`` to write a cProfile of vbank's event
loop during the throughput phase.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import logging
import math
import multiprocessing
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from vbank.app import create_app, settle_heap
from vbank.auth.passwords import Passwords
from vbank.auth.sessions import open_session
from vbank.bench._load import WARMUP_DRAINS, LoadSpec, Pair, Peer, child_main, raise_fd_limit
from vbank.config import Settings
from vbank.contact.models import ChatMessage, Contact
from vbank.context import SERVICES
from vbank.db import Database
from vbank.migrate import upgrade
from vbank.models import AgentProfile, User

logger = logging.getLogger(__name__)

MAX_CLIENTS = 5000
MAX_SECONDS = 300.0
TARGET_P99_MS = 20.0
TARGET_RATIO = 0.5
#: VBANK_WS_RATE_SCALE for the bench: one customer may send far more than a human would
BENCH_RATE_SCALE = 10_000.0
SKILL = "general"
SHUTDOWN_S = 5.0


@dataclass(frozen=True)
class Seeded:
    """What the set-up created: per pair (contact id, customer token, agent token)."""

    pairs: list[tuple[str, str, str]]
    contact_ids: list[str]


@dataclass
class ServerWatch:
    """Server-side measurements over the client's phase windows (runs on the event loop)."""

    counters: Callable[[], tuple[int, int]] = lambda: (0, 0)
    profile_path: str | None = None
    marks: dict[str, tuple[float, float, int, int]] = field(default_factory=dict)
    _profiler: cProfile.Profile | None = field(default=None, init=False, repr=False)

    def mark(self, name: str) -> None:
        batches, messages = self.counters()
        self.marks[name] = (time.perf_counter(), time.process_time(), batches, messages)
        if self.profile_path and name == "throughput":
            self._profiler = cProfile.Profile()
            self._profiler.enable()
        elif self._profiler is not None and self.profile_path and name == "throughput_end":
            self._profiler.disable()
            self._profiler.dump_stats(self.profile_path)
            self._profiler = None

    def window(self, name: str) -> dict[str, Any]:
        if name not in self.marks or f"{name}_end" not in self.marks:
            return {}
        t0, c0, b0, m0 = self.marks[name]
        t1, c1, b1, m1 = self.marks[f"{name}_end"]
        batches, messages = b1 - b0, m1 - m0
        out: dict[str, Any] = {"server_cpu_util": round((c1 - c0) / max(t1 - t0, 1e-9), 3)}
        if batches:
            out.update(batches=batches, mean_batch=round(messages / batches, 1))
        return out


# ---------------------------------------------------------------------------- set-up


async def seed(db: Database, pairs: int, tag: str, ttl_s: int) -> Seeded:
    """Customers, agents, sessions and assigned contacts, straight into the tables."""
    password_hash = await Passwords().hash_async(secrets.token_urlsafe(18))
    now = datetime.now(UTC)

    def user(kind: str, i: int) -> User:
        role = "customer" if kind == "c" else "agent"
        return User(
            username=f"bench-{tag}-{kind}{i}",
            display_name=f"Bench {role} {i}",
            role=role,
            password_hash=password_hash,
            disabled=False,
            created_at=now,
        )

    async with db.transaction() as session:
        customers = [user("c", i) for i in range(pairs)]
        agents = [user("a", i) for i in range(pairs)]
        session.add_all([*customers, *agents])
        await session.flush()
        session.add_all([AgentProfile(user_id=a.id, skills=SKILL, capacity=1) for a in agents])
        contacts = [
            Contact(
                id=uuid.uuid4().hex,
                customer_id=c.id,
                agent_id=a.id,
                skill=SKILL,
                state="assigned",
                created_at=now,
                queued_at=now,
                assigned_at=now,
                priority=False,
            )
            for c, a in zip(customers, agents, strict=True)
        ]
        session.add_all(contacts)
        out: list[tuple[str, str, str]] = []
        for contact, c, a in zip(contacts, customers, agents, strict=True):
            c_token, _ = await open_session(session, c, ttl_s)
            a_token, _ = await open_session(session, a, ttl_s)
            out.append((contact.id, c_token, a_token))
    return Seeded(out, [c.id for c in contacts])


async def finish(db: Database, contact_ids: list[str], close: bool) -> int:
    """How many chat messages were stored; with ``close``, leave a shared database as a
    later run expects it: no open bench contacts."""
    async with db.transaction() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(ChatMessage)
            .where(ChatMessage.contact_id.in_(contact_ids))
        )
        if close:
            await session.execute(
                update(Contact)
                .where(Contact.id.in_(contact_ids))
                .values(state="closed", closed_at=datetime.now(UTC), close_reason="system")
            )
    return int(stored or 0)


# ---------------------------------------------------------------------------- servers


async def start_site(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 at a free port; stopping it waits at most a few seconds."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port


def relay_app(pairs: int) -> web.Application:
    """The baseline: no auth, no validation, no storage; ack the customer, forward to the agent.

    It answers ``hello`` and ``chat.send`` with the same frame types vbank uses, so the
    load generator cannot tell the two apart.
    """
    app = web.Application()
    peers: dict[tuple[int, str], web.WebSocketResponse] = {}
    seqs = [0] * pairs

    async def handler(request: web.Request) -> web.WebSocketResponse:
        try:
            pair = int(request.query["pair"])
            role = request.query["role"]
        except (KeyError, ValueError):
            raise web.HTTPBadRequest() from None
        if not 0 <= pair < pairs or role not in ("customer", "agent"):
            raise web.HTTPBadRequest()
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=64 * 1024)
        await ws.prepare(request)
        peers[(pair, role)] = ws
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                kind = frame.get("type")
                if kind == "hello":
                    await ws.send_str(json.dumps({"v": 1, "type": "welcome", "role": role}))
                elif kind == "chat.send" and role == "customer":
                    seqs[pair] += 1
                    seq = seqs[pair]
                    await ws.send_str(
                        json.dumps(
                            {
                                "v": 1,
                                "type": "ack",
                                "id": frame.get("id"),
                                "seq": seq,
                                "contact_id": frame.get("contact_id"),
                            }
                        )
                    )
                    agent = peers.get((pair, "agent"))
                    if agent is not None and not agent.closed:
                        await agent.send_str(
                            json.dumps(
                                {
                                    "v": 1,
                                    "type": "chat.message",
                                    "contact_id": frame.get("contact_id"),
                                    "seq": seq,
                                    "sender": "customer",
                                    "text": frame.get("text"),
                                    "client_id": frame.get("client_id"),
                                }
                            )
                        )
        finally:
            if peers.get((pair, role)) is ws:
                del peers[(pair, role)]
        return ws

    app.router.add_get("/ws", handler)
    return app


# ---------------------------------------------------------------------------- the client process


def _collect(
    conn: Connection,
    proc: multiprocessing.process.BaseProcess,
    deadline: float,
    on_phase: Callable[[str], None],
) -> dict[str, Any]:
    """Runs in a thread: relay phase marks to the loop, return the child's result (bounded)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the load generator overran its time budget")
        if not conn.poll(min(remaining, 0.5)):
            if not proc.is_alive() and not conn.poll(0):
                raise RuntimeError(f"the load generator died (exit code {proc.exitcode})")
            continue
        kind, value = conn.recv()
        if kind == "phase":
            on_phase(str(value))
        elif kind == "result":
            assert isinstance(value, dict)
            return value
        else:
            raise RuntimeError(f"the load generator failed:\n{value}")


async def drive(spec: LoadSpec, watch: ServerWatch) -> dict[str, Any]:
    """Run the load generator in a spawned process while this loop keeps serving."""
    warmup = 2 * WARMUP_DRAINS * spec.drain_s
    budget = spec.connect_timeout_s + warmup + 2 * (spec.seconds + 2 * spec.drain_s) + 70
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child_main, args=(spec, sender), name="vbank-bench-load", daemon=True)
    proc.start()
    sender.close()
    loop = asyncio.get_running_loop()

    def on_phase(name: str) -> None:
        loop.call_soon_threadsafe(watch.mark, name)

    try:
        return await asyncio.to_thread(
            _collect, receiver, proc, time.monotonic() + budget, on_phase
        )
    finally:
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.kill()
            await asyncio.to_thread(proc.join, 5)
        receiver.close()


# ---------------------------------------------------------------------------- the bench


def _settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        secret_key=secrets.token_urlsafe(48),
        master_keys=(("bench", secrets.token_bytes(32)),),
        host="127.0.0.1",
        port=0,
        agent_grace_s=3600.0,
        ws_rate_scale=BENCH_RATE_SCALE,
        log_json=False,
    )


def _check(clients: int, seconds: float, rate: float) -> None:
    if not 2 <= clients <= MAX_CLIENTS or clients % 2:
        raise SystemExit(f"--clients must be an even number from 2 to {MAX_CLIENTS}")
    if not 0 < seconds <= MAX_SECONDS:
        raise SystemExit(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    if not 0 < rate <= 1_000_000:
        raise SystemExit("--rate must be positive")


async def load_test(
    app: web.Application,
    pairs: Callable[[int], tuple[Pair, ...]],
    watch: ServerWatch,
    seconds: float,
    rate: float,
    tag: str,
) -> dict[str, Any]:
    """Serve ``app`` while the load generator runs against it; stop it afterwards."""
    t0 = time.perf_counter()
    runner, port = await start_site(app)
    try:
        peers = pairs(port)
        spec = LoadSpec(
            pairs=peers,
            seconds=seconds,
            rate=rate,
            tag=tag,
            connect_timeout_s=30.0 + 0.06 * len(peers) * 2,
            drain_s=min(max(5.0, seconds), 30.0),
        )
        result = await drive(spec, watch)
    finally:
        await runner.cleanup()
    for phase in ("throughput", "latency"):
        result[phase].update(watch.window(phase))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


async def run(
    clients: int,
    seconds: float,
    rate: float,
    database_url: str | None = None,
    profile_path: str | None = None,
) -> dict[str, Any]:
    """The whole bench: set-up, vbank under load, the relay under the same load, the report."""
    _check(clients, seconds, rate)
    raise_fd_limit(2 * clients + 512)
    tag = secrets.token_hex(3)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vbank-bench-") as tmp:
        data_dir = Path(tmp)
        url = database_url or f"sqlite:///{data_dir / 'vbank.sqlite3'}"
        await asyncio.to_thread(upgrade, url)
        settings = _settings(data_dir, url)
        db = Database(url)
        try:
            seeded = await seed(db, clients // 2, tag, settings.session_ttl_s)
        finally:
            await db.close()
        setup_s = time.perf_counter() - t0

        def vbank_pairs(port: int) -> tuple[Pair, ...]:
            url = f"http://127.0.0.1:{port}/ws"
            return tuple(Pair(cid, Peer(url, ct), Peer(url, at)) for cid, ct, at in seeded.pairs)

        def relay_pairs(port: int) -> tuple[Pair, ...]:
            url = f"http://127.0.0.1:{port}/ws"
            return tuple(
                Pair(cid, Peer(f"{url}?pair={i}&role=customer"), Peer(f"{url}?pair={i}&role=agent"))
                for i, (cid, _, _) in enumerate(seeded.pairs)
            )

        app = create_app(settings)
        thresholds = gc.get_threshold()
        settle_heap()  # as `vbank serve` does before serving
        chat = app[SERVICES].realtime.contacts.chat
        watch = ServerWatch(lambda: (chat.writer.batches, chat.writer.units), profile_path)
        try:
            vbank = await load_test(app, vbank_pairs, watch, seconds, rate, tag)
        finally:  # leave the collector as it was (the bench may run inside another program)
            gc.unfreeze()
            gc.set_threshold(*thresholds)
        db = Database(url)
        try:
            vbank["stored"] = await finish(db, seeded.contact_ids, close=database_url is not None)
        finally:
            await db.close()

        relay = relay_app(clients // 2)
        echo = await load_test(relay, relay_pairs, ServerWatch(), seconds, rate, tag + "e")
    result = report(clients, seconds, rate, url, vbank, echo, profile_path)
    result["setup_s"] = round(setup_s, 1)
    return result


def _num(value: Any) -> float | None:
    """JSON has no NaN: an empty percentile becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, int | float) else None


def report(
    clients: int,
    seconds: float,
    rate: float,
    url: str,
    vbank: dict[str, Any],
    echo: dict[str, Any],
    profile_path: str | None,
) -> dict[str, Any]:
    """The flat summary the issue asks for, with both runs' details underneath."""
    lat, thr = vbank["latency"], vbank["throughput"]
    e_lat, e_thr = echo["latency"], echo["throughput"]
    msgs, echo_msgs = thr["msgs_per_s"], e_thr["msgs_per_s"]
    ratio = round(msgs / echo_msgs, 3) if echo_msgs else 0.0
    p99 = _num(lat["p99_ms"])
    out: dict[str, Any] = {
        "clients": clients,
        "seconds": seconds,
        "database": make_url(url).get_backend_name(),
        "offered_rate": rate,
        "p50_ms": _num(lat["p50_ms"]),
        "p99_ms": p99,
        "msgs_per_s": msgs,
        "echo_msgs_per_s": echo_msgs,
        "ratio": ratio,
        "echo_p50_ms": _num(e_lat["p50_ms"]),
        "echo_p99_ms": _num(e_lat["p99_ms"]),
        "achieved_rate": lat["msgs_per_s"],
        "closed_loop_p50_ms": _num(thr["p50_ms"]),
        "closed_loop_p99_ms": _num(thr["p99_ms"]),
        "echo_closed_loop_p50_ms": _num(e_thr["p50_ms"]),
        "echo_closed_loop_p99_ms": _num(e_thr["p99_ms"]),
        "delivered": vbank["delivered"],
        "lost": vbank["lost"],
        "unacked": vbank["unacked"],
        "stored": vbank["stored"],
        "shed": vbank["shed"],
        "drained": lat["drained"] and thr["drained"],
        "duplicates": vbank["duplicates"],
        "reordered": vbank["reordered"],
        "echo_delivered": echo["delivered"],
        "echo_lost": echo["lost"],
        "echo_duplicates": echo["duplicates"],
        "batches": thr.get("batches", 0),
        "mean_batch": thr.get("mean_batch", 0.0),
        "server_cpu_util": thr.get("server_cpu_util"),
        "client_cpu_util": thr.get("client_cpu_util"),
        "echo_client_cpu_util": e_thr.get("client_cpu_util"),
        "targets": {"p99_ms": TARGET_P99_MS, "ratio": TARGET_RATIO},
        "meets_targets": p99 is not None and p99 <= TARGET_P99_MS and ratio >= TARGET_RATIO,
        "vbank": _clean(vbank),
        "echo": _clean(echo),
    }
    if profile_path:
        out["profile"] = profile_path
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return _num(value) if isinstance(value, float) else value


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of ``vbank bench signalling``."""
    return asyncio.run(
        run(
            clients=args.clients,
            seconds=args.seconds,
            rate=args.rate,
            database_url=args.database_url,
            profile_path=os.environ.get("VBANK_BENCH_PROFILE") or None,
        )
    )
