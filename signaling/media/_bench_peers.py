"""Client side of the media benchmark, run in its own process by :mod:`.bench`.

Plays 2 x N browser stand-ins (customer and agent of N calls) that send
pre-encoded 640x480 VP8 at 30 fps plus Opus, and count the video frames they
receive without decoding them, so the clients cost little CPU and the server's
numbers are the server's. Talks JSON lines over stdin/stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import av

from .testing import (
    AUDIO_RATE,
    VIDEO_CLOCK,
    ClientPeer,
    PacketTrack,
    encode_opus_sine,
    encode_vp8,
    pattern_yuv,
)

logger = logging.getLogger(__name__)

FACE_CLIP = Path("/work/shared/faces/video/KwaiVGI__LivePortrait/assets/examples/driving/d18.mp4")


def load_clip(fps: int, seconds: float = 4.0) -> list[bytes]:
    """Pre-encoded VP8 (about 1 Mbit/s, keyframe every 2 s) of a real face if available."""
    frames: list[av.VideoFrame] = []
    count = int(fps * seconds)
    if FACE_CLIP.exists():
        with av.open(str(FACE_CLIP)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.reformat(width=640, height=480, format="yuv420p"))
                if len(frames) >= count:
                    break
    if len(frames) < count:
        frames = [
            av.VideoFrame.from_ndarray(pattern_yuv(640, 480, 1, i), format="yuv420p")
            for i in range(count)
        ]
    return encode_vp8(frames, fps=fps, bitrate=1_000_000, gop=2 * fps)


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main_async(sessions: int, fps: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    video = load_clip(fps)
    audio = encode_opus_sine(4.0)
    peers: dict[tuple[int, str], ClientPeer] = {}
    for i in range(sessions):
        for role in ("customer", "agent"):
            peer = ClientPeer(
                PacketTrack("video", video, 1 / fps, VIDEO_CLOCK),
                PacketTrack("audio", audio, 0.02, AUDIO_RATE),
                decode=False,
                video_codec="video/VP8",
            )
            peers[(i, role)] = peer
            send({"type": "offer", "session": i, "role": role, "sdp": await peer.offer()})

    started = time.monotonic()
    cpu_start = time.process_time()
    while True:
        line = await reader.readline()
        if not line:
            break
        msg = json.loads(line)
        if msg["type"] == "answer":
            await peers[(msg["session"], msg["role"])].answer(msg["sdp"])
        elif msg["type"] == "start":
            for peer in peers.values():
                peer.reset_counts()
            started, cpu_start = time.monotonic(), time.process_time()
        elif msg["type"] == "stop":
            wall = time.monotonic() - started
            send(
                {
                    "type": "result",
                    "wall_s": wall,
                    "cpu_s": time.process_time() - cpu_start,
                    "fps": {
                        f"{i}:{role}": len(p.video.arrivals) / wall
                        for (i, role), p in peers.items()
                    },
                    "audio_fps": {
                        f"{i}:{role}": p.audio_frames / wall for (i, role), p in peers.items()
                    },
                    "connected": sum(p.pc.connectionState == "connected" for p in peers.values()),
                }
            )
        elif msg["type"] == "exit":
            break
    for peer in peers.values():
        await peer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main_async(args.sessions, args.fps))


if __name__ == "__main__":
    main()
