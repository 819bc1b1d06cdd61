"""The load generator of ``vbank bench signalling``, run in its own (spawned) process.

It lives apart from the server so that the clients' CPU is not the server's: the bench
process runs the server, this process runs every client websocket. It speaks the signalling
protocol's ``hello``/``chat.send`` frames and reads ``welcome``/``ack``/``chat.message``,
which is all the bare relay baseline implements too, so both are driven identically.

Phases, all bounded in time: connect (customers and agents, ``hello`` → ``welcome``),
warm-up (a few closed-loop messages per customer, not measured), throughput (closed loop:
next message as soon as the ack of the previous one arrives) and latency (open loop at a
fixed offered rate; a customer too far behind skips turns, counted as ``shed``). Every
message carries a fresh ``client_id``; the agent side checks each one arrives exactly once
and in ``seq`` order. Phase boundaries are reported to the parent through the pipe so it
can measure (and profile) the server over the same window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import resource
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

#: connections opened at once (the server's listen backlog is larger)
CONNECT_CONCURRENCY = 64
#: open loop: a customer this many unacknowledged messages behind skips its turn (counted
#: as ``shed``), so an overloaded server's backlog, and the drain after it, stay bounded
MAX_OUTSTANDING = 8
#: the warm-up may take this many drain periods (an unpatched server is slow)
WARMUP_DRAINS = 3


@dataclass(frozen=True)
class Peer:
    """One websocket to open: its URL and, for vbank, the session cookie's token."""

    url: str
    token: str | None = None


@dataclass(frozen=True)
class Pair:
    """A customer and the agent they chat with about ``contact_id``."""

    contact_id: str
    customer: Peer
    agent: Peer


@dataclass(frozen=True)
class LoadSpec:
    """Everything the child needs; picklable, so it crosses the spawn boundary."""

    pairs: tuple[Pair, ...]
    seconds: float
    rate: float
    tag: str
    connect_timeout_s: float = 60.0
    drain_s: float = 5.0
    warmup_messages: int = 1
    text: str = "Hello, I would like to check the last card payment, please."


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted or not); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3) if not math.isnan(seconds) else math.nan


class Tracker:
    """Every message sent, its ack and its deliveries to the agent (one clock: this process)."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.lag: dict[str, float] = {}
        self.acked: dict[str, float] = {}
        self.delivered: dict[str, float] = {}
        self.duplicates = 0
        self.unknown = 0
        self.reordered = 0
        self.errors: Counter[str] = Counter()
        self.waiters: dict[str, asyncio.Future[None]] = {}
        self.phase_ids: dict[str, list[str]] = {}
        self.shed: Counter[str] = Counter()
        self.outstanding: Counter[int] = Counter()
        self._owner: dict[str, int] = {}
        self._pending: set[str] = set()
        self._settled = asyncio.Event()
        self._settled.set()
        self._last_seq: dict[str, int] = {}

    def sending(self, phase: str, owner: int, client_id: str, lag: float = 0.0) -> None:
        self.sent[client_id] = time.perf_counter()
        self.lag[client_id] = lag
        self._owner[client_id] = owner
        self.outstanding[owner] += 1
        self.phase_ids.setdefault(phase, []).append(client_id)
        self._pending.add(client_id)
        self._settled.clear()

    def _maybe_done(self, client_id: str) -> None:
        if client_id in self.acked and client_id in self.delivered:
            self._pending.discard(client_id)
            if not self._pending:
                self._settled.set()

    def on_ack(self, client_id: str, now: float) -> None:
        if client_id in self.sent and client_id not in self.acked:
            self.acked[client_id] = now
            self.outstanding[self._owner[client_id]] -= 1
            self._maybe_done(client_id)
        waiter = self.waiters.pop(client_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_error(self, frame: dict[str, Any]) -> None:
        self.errors[str(frame.get("code"))] += 1
        ref = frame.get("ref_id")
        if isinstance(ref, str) and ref in self._owner:
            self.outstanding[self._owner[ref]] -= 1
        waiter = self.waiters.pop(ref, None) if isinstance(ref, str) else None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_delivery(self, frame: dict[str, Any], now: float) -> None:
        client_id = frame.get("client_id")
        if not isinstance(client_id, str) or client_id not in self.sent:
            self.unknown += 1
            return
        if client_id in self.delivered:
            self.duplicates += 1
            return
        self.delivered[client_id] = now
        contact_id, seq = str(frame.get("contact_id")), frame.get("seq")
        if isinstance(seq, int):
            if seq <= self._last_seq.get(contact_id, 0):
                self.reordered += 1
            self._last_seq[contact_id] = seq
        self._maybe_done(client_id)

    async def drain(self, limit_s: float) -> bool:
        """Wait (bounded) until every message sent so far is acked and delivered."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await self._settled.wait()
        return self._settled.is_set()

    def phase(self, name: str, start: float, end: float) -> dict[str, Any]:
        """Statistics of one phase; ``msgs_per_s`` counts messages completed in its window."""
        ids = self.phase_ids.get(name, [])
        latencies = [self.delivered[i] - self.sent[i] for i in ids if i in self.delivered]
        acks = [self.acked[i] - self.sent[i] for i in ids if i in self.acked]
        completed = sum(
            1
            for i in ids
            if i in self.acked
            and i in self.delivered
            and max(self.acked[i], self.delivered[i]) <= end
        )
        window = max(end - start, 1e-9)
        lags = [self.lag[i] for i in ids]
        delivered = sum(1 for i in ids if i in self.delivered)
        return {
            "seconds": round(window, 3),
            "sent": len(ids),
            "shed": self.shed[name],
            "acked": sum(1 for i in ids if i in self.acked),
            "delivered": delivered,
            "lost": len(ids) - delivered,
            "sent_per_s": round(len(ids) / window, 1),
            "msgs_per_s": round(completed / window, 1),
            "p50_ms": _ms(percentile(latencies, 50)),
            "p90_ms": _ms(percentile(latencies, 90)),
            "p99_ms": _ms(percentile(latencies, 99)),
            "max_ms": _ms(max(latencies, default=math.nan)),
            "ack_p50_ms": _ms(percentile(acks, 50)),
            "ack_p99_ms": _ms(percentile(acks, 99)),
            "send_lag_p99_ms": _ms(percentile(lags, 99)),
        }


class Client:
    """One websocket (customer or agent) and its reader task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, tracker: Tracker, agent: bool) -> None:
        self.ws = ws
        self.tracker = tracker
        self.agent = agent
        self.welcome = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        tracker = self.tracker
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            frame = json.loads(msg.data)
            kind = frame.get("type")
            if kind == "chat.message":
                if self.agent and frame.get("sender") == "customer":
                    tracker.on_delivery(frame, now)
            elif kind == "ack":
                tracker.on_ack(frame["id"], now)
            elif kind == "error":
                tracker.on_error(frame)
            elif kind == "welcome":
                self.welcome.set()

    async def send_chat(self, contact_id: str, client_id: str, text: str) -> None:
        frame = {
            "v": 1,
            "type": "chat.send",
            "id": client_id,
            "contact_id": contact_id,
            "client_id": client_id,
            "text": text,
        }
        await self.ws.send_str(json.dumps(frame))


async def _open(
    http: aiohttp.ClientSession, peer: Peer, tracker: Tracker, agent: bool, gate: asyncio.Semaphore
) -> Client:
    headers = {"Cookie": f"vbank_session={peer.token}"} if peer.token else {}
    async with gate:
        ws = await http.ws_connect(peer.url, headers=headers, autoclose=True, heartbeat=None)
        client = Client(ws, tracker, agent)
        await ws.send_str(json.dumps({"v": 1, "type": "hello", "id": "hello"}))
        await client.welcome.wait()
    return client


async def _open_loop(
    spec: LoadSpec, tracker: Tracker, index: int, client: Client, start: float, end: float
) -> None:
    """Send at a fixed rate whatever the replies do (no coordinated omission)."""
    per_customer = spec.rate / len(spec.pairs)
    interval = 1.0 / per_customer
    contact_id = spec.pairs[index].contact_id
    due = start + interval * (index / len(spec.pairs))  # spread the customers' phases
    n = 0
    while due < end:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled, due, n = due, due + interval, n + 1
        if tracker.outstanding[index] >= MAX_OUTSTANDING:
            tracker.shed["latency"] += 1
            continue
        client_id = f"{spec.tag}L{index}-{n}"
        lag = max(0.0, time.perf_counter() - scheduled)
        tracker.sending("latency", index, client_id, lag=lag)
        await client.send_chat(contact_id, client_id, spec.text)


async def _closed_loop(
    spec: LoadSpec,
    tracker: Tracker,
    phase: str,
    index: int,
    client: Client,
    end: float,
    limit: int | None = None,
    ack_timeout_s: float | None = None,
) -> None:
    """Send the next message as soon as the previous one is acknowledged."""
    loop = asyncio.get_running_loop()
    contact_id = spec.pairs[index].contact_id
    n = 0
    while time.perf_counter() < end and (limit is None or n < limit):
        client_id = f"{spec.tag}{phase[0].upper()}{index}-{n}"
        waiter: asyncio.Future[None] = loop.create_future()
        tracker.waiters[client_id] = waiter
        tracker.sending(phase, index, client_id)
        await client.send_chat(contact_id, client_id, spec.text)
        n += 1
        try:
            async with asyncio.timeout(ack_timeout_s or spec.drain_s):
                await waiter
        except TimeoutError:
            tracker.waiters.pop(client_id, None)
            tracker.errors["ack_timeout"] += 1
            return


async def run_load(spec: LoadSpec, mark: Callable[[str], None]) -> dict[str, Any]:
    """Connect, warm up, run both phases, close; returns the client-side statistics."""
    tracker = Tracker()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, connect=spec.connect_timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout
    ) as http:
        t0 = time.perf_counter()
        async with asyncio.timeout(spec.connect_timeout_s):
            agents = await asyncio.gather(
                *(_open(http, p.agent, tracker, True, gate) for p in spec.pairs)
            )
            customers = await asyncio.gather(
                *(_open(http, p.customer, tracker, False, gate) for p in spec.pairs)
            )
        connect_s = time.perf_counter() - t0
        clients = [*agents, *customers]
        try:
            return await _phases(spec, tracker, customers, mark, connect_s)
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
            for c in clients:
                c.reader.cancel()
            await asyncio.gather(*(c.reader for c in clients), return_exceptions=True)


async def _phases(
    spec: LoadSpec,
    tracker: Tracker,
    customers: list[Client],
    mark: Callable[[str], None],
    connect_s: float,
) -> dict[str, Any]:
    mark("connected")
    # Warm-up, so that the measured phases start with every code path and connection hot
    # and with nothing in flight: a slow server gets WARMUP_DRAINS drain periods for it.
    t0 = time.perf_counter()
    slow = WARMUP_DRAINS * spec.drain_s
    await asyncio.gather(
        *(
            _closed_loop(spec, tracker, "warmup", i, c, math.inf, spec.warmup_messages, slow)
            for i, c in enumerate(customers)
        )
    )
    warmed = await tracker.drain(slow)
    results: dict[str, Any] = {
        "connect_s": round(connect_s, 3),
        "warmup_s": round(time.perf_counter() - t0, 3),
        "warmup_drained": warmed,
    }
    # Closed loop first: it leaves at most one message per customer in flight, while an
    # overloaded open loop can leave a backlog that would stall the phase after it.
    for name in ("throughput", "latency"):
        mark(name)
        cpu0, start = time.process_time(), time.perf_counter()
        end = start + spec.seconds
        if name == "latency":
            senders = [_open_loop(spec, tracker, i, c, start, end) for i, c in enumerate(customers)]
        else:
            senders = [
                _closed_loop(spec, tracker, name, i, c, end) for i, c in enumerate(customers)
            ]
        await asyncio.gather(*senders)
        mark(f"{name}_end")
        cpu1, stop = time.process_time(), time.perf_counter()
        drained = await tracker.drain(spec.drain_s)
        stats = tracker.phase(name, start, end)
        stats["drained"] = drained
        stats["client_cpu_util"] = round((cpu1 - cpu0) / max(stop - start, 1e-9), 3)
        results[name] = stats
    mark("end")
    results.update(
        sent=len(tracker.sent),
        delivered=len(tracker.delivered),
        lost=len(tracker.sent) - len(tracker.delivered),
        unacked=len(tracker.sent) - len(tracker.acked),
        shed=sum(tracker.shed.values()),
        duplicates=tracker.duplicates,
        unknown=tracker.unknown,
        reordered=tracker.reordered,
        errors=dict(tracker.errors),
    )
    return results


def raise_fd_limit(needed: int) -> None:
    """Each websocket is a file descriptor; lift the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def child_main(spec: LoadSpec, conn: Connection) -> None:
    """Entry point of the spawned process: phase marks, then the result, through ``conn``."""
    raise_fd_limit(2 * len(spec.pairs) + 256)
    try:
        result = asyncio.run(run_load(spec, lambda name: conn.send(("phase", name))))
        conn.send(("result", result))
    except BaseException:
        conn.send(("error", traceback.format_exc(limit=20)))
    finally:
        conn.close()
