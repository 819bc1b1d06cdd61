"""How many relayed + recorded 640x480 calls one server process sustains.

``run(sessions, seconds)`` starts a MediaManager in this process and the
browser stand-ins in a child process (:mod:`._bench_peers`: pre-encoded VP8 at
30 fps + Opus, no decoding), connects ``sessions`` calls, and after a warm-up
measures for ``seconds``: video fps delivered to every client, this process's
CPU (all threads) and RSS, and where the CPU went per thread group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .session import MediaConfig, MediaManager, MediaSession

logger = logging.getLogger(__name__)

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _thread_group(name: str) -> str:
    if name == "MainThread":
        return "event_loop"
    if name.endswith("-decoder"):
        return "aiortc_decoders"
    if name.startswith("media-rec"):
        return "recorders"
    if name.startswith("media-decode"):
        return "tap_transcode"
    if name.startswith(("asyncio_", "ThreadPoolExecutor")):
        return "aiortc_encoders"
    return "other"


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds per live thread of this process, by native id (Linux /proc)."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
        out[int(tid)] = (names.get(int(tid), "native"), cpu)
    return out


def cpu_by_group(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    groups: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        spent = cpu - before.get(tid, (name, 0.0))[1]
        group = _thread_group(name)
        groups[group] = groups.get(group, 0.0) + spent
    return {k: round(v, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def _by_module(profiler: cProfile.Profile) -> dict[str, float]:
    """Event-loop thread CPU seconds (own time) per package, from a thread-time profile."""
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        if "signaling/media" in filename:
            group = "signaling.media"
        elif "site-packages/" in filename:
            group = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif filename == "~" and "srtp" in func:
            group = "pylibsrtp"
        elif filename == "~" and ("sendto" in func or "recvfrom" in func):
            group = "socket I/O"
        elif filename == "~":
            group = "builtins"
        else:
            group = "asyncio/stdlib"
        groups[group] = groups.get(group, 0.0) + tottime
    total = sum(groups.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


async def _loop_lag(stop: asyncio.Event, samples: list[float]) -> None:
    """Event loop responsiveness: how late a 50 ms sleep wakes up."""
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(0.05)
        samples.append(time.monotonic() - t - 0.05)


async def _packets_lost(sessions: list[MediaSession]) -> tuple[int, int]:
    """RTP packets lost towards the server (inbound) and towards the clients (as reported)."""
    lost_in = lost_out = 0
    for session in sessions:
        for role in ("customer", "agent"):
            pc = session.peer_connection(role)
            if pc is None:
                continue
            for stat in (await pc.getStats()).values():
                if stat.type == "inbound-rtp":
                    lost_in += max(0, stat.packetsLost)
                elif stat.type == "remote-inbound-rtp":
                    lost_out += max(0, stat.packetsLost)
    return lost_in, lost_out


async def run(
    sessions: int,
    seconds: float,
    *,
    forward_encoded: bool = True,
    warmup: float = 4.0,
    fps: int = 30,
    profile: bool = False,
    record_dir: Path | None = None,
) -> dict[str, Any]:
    """Benchmark ``sessions`` concurrent calls for ``seconds``; returns the measurements."""
    tmp = Path(tempfile.mkdtemp(prefix="vbank-bench-")) if record_dir is None else None
    rec_root = record_dir or tmp
    assert rec_root is not None
    manager = MediaManager(MediaConfig(forward_encoded=forward_encoded))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "signaling.media._bench_peers",
        "--sessions",
        str(sessions),
        "--fps",
        str(fps),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def send(msg: dict[str, Any]) -> None:
        stdin.write((json.dumps(msg) + "\n").encode())
        await stdin.drain()

    async def receive() -> dict[str, Any]:
        line = await stdout.readline()
        if not line:
            raise RuntimeError("benchmark peers exited")
        result: dict[str, Any] = json.loads(line)
        return result

    rss_start = rss_mb()
    result: dict[str, Any] = {}
    try:
        for _ in range(2 * sessions):
            msg = await asyncio.wait_for(receive(), 120)
            sid = f"bench-{msg['session']}"
            session = manager.get(sid) or manager.create_session(sid, rec_root / sid)
            answer = await session.accept_offer(msg["role"], msg["sdp"])
            await send(
                {"type": "answer", "session": msg["session"], "role": msg["role"], "sdp": answer}
            )
        await asyncio.sleep(warmup)

        stop = asyncio.Event()
        lags: list[float] = []
        lag_task = asyncio.ensure_future(_loop_lag(stop, lags))
        # thread CPU time, not wall time: on a busy box wall time mostly measures waiting
        profiler = cProfile.Profile(time.thread_time) if profile else None
        threads_before = thread_cpu()
        cpu0, wall0 = time.process_time(), time.monotonic()
        await send({"type": "start"})
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(seconds)
        if profiler is not None:
            profiler.disable()
        await send({"type": "stop"})
        cpu1, wall1 = time.process_time(), time.monotonic()
        threads_after = thread_cpu()
        stop.set()
        await lag_task
        peers = await asyncio.wait_for(receive(), 30)

        fps_all: dict[str, float] = peers["fps"]
        live = [s for s in manager.sessions.values() if not s.closing]
        keyframe_requests = sum(
            s.source(role, "video").keyframe_requests
            for s in live
            for role in ("customer", "agent")
        )
        relays = [
            s.relay(role, kind)
            for s in live
            for role in ("customer", "agent")
            for kind in ("audio", "video")
        ]
        relay_dropped = sum(r.dropped for r in relays if r is not None)
        lost = await _packets_lost(live)
        result = {
            "sessions": sessions,
            "mode": "forward" if forward_encoded else "decode",
            "fps_min": round(min(fps_all.values(), default=0.0), 1),
            "fps_mean": round(sum(fps_all.values()) / max(len(fps_all), 1), 1),
            "audio_fps_min": round(min(peers["audio_fps"].values(), default=0.0), 1),
            "cpu_percent": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
            "rss_mb_start": round(rss_start, 1),
            "rss_mb_end": round(rss_mb(), 1),
            "client_cpu_percent": round(100 * peers["cpu_s"] / peers["wall_s"], 1),
            "loop_lag_ms_p50": round(1000 * sorted(lags)[len(lags) // 2], 1) if lags else 0.0,
            "loop_lag_ms_max": round(1000 * max(lags, default=0.0), 1),
            "cpu_s_by_thread": cpu_by_group(threads_before, threads_after),
            "connected_sessions": len(live),
            "keyframe_requests": keyframe_requests,
            "relay_dropped": relay_dropped,
            "packets_lost_in": lost[0],
            "packets_lost_out": lost[1],
            "seconds": round(wall1 - wall0, 2),
        }
        if profiler is not None:
            result["loop_cpu_by_module"] = _by_module(profiler)
            buf = io.StringIO()
            stats = pstats.Stats(profiler, stream=buf)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats("signaling/media", 15)
            result["profile_top"] = buf.getvalue()
    finally:
        with contextlib.suppress(Exception):
            await send({"type": "exit"})
        await manager.shutdown("bench_end")
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> None:
    """``python -m signaling.media.bench --sessions 8 --seconds 10 [--decode] [--profile]``"""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--decode", action="store_true", help="decode mode (public API only)")
    parser.add_argument("--profile", action="store_true", help="cProfile the event loop thread")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for n in args.sessions:
        out = asyncio.run(
            run(n, args.seconds, forward_encoded=not args.decode, profile=args.profile)
        )
        profile_top = out.pop("profile_top", None)
        print(json.dumps(out), flush=True)
        if profile_top:
            print(profile_top, file=sys.stderr)


if __name__ == "__main__":
    main()
