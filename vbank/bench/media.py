"""`vbank bench media`: concurrent relayed + recorded 640x480 calls at >= 15 fps delivered."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from signaling.media import bench

TARGET_FPS = 15.0


def main(args: argparse.Namespace) -> dict[str, Any]:
    seconds = max(10.0, args.minutes * 60)
    if args.sessions:
        return asyncio.run(bench.run(args.sessions, seconds))
    # search upwards: the largest count that still delivers TARGET_FPS to every call
    best: dict[str, Any] | None = None
    for sessions in (1, 2, 4, 6, 8, 10, 12):
        result = asyncio.run(bench.run(sessions, min(seconds, 20.0)))
        if result["fps_min"] < TARGET_FPS:
            break
        best = result
    if best is None:
        return {"sessions": 0, "fps_min": 0.0, "note": "not even one call held 15 fps"}
    return best
