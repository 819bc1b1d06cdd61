"""SideRecorder: remux without transcoding, decode-mode encoding, abrupt end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import av
import pytest

from signaling.media.frames import DecodedFrame, EncodedFrame
from signaling.media.recorder import SideRecorder
from signaling.media.testing import read_pattern

from .conftest import H264, OPUS, VP8, as_encoded, pattern_frames


def interleave(video: list[EncodedFrame], audio: list[EncodedFrame]) -> list[EncodedFrame]:
    return sorted(video + audio, key=lambda f: f.arrival)


def probe(path: Path) -> dict[str, object]:
    with av.open(str(path)) as container:
        streams = {s.type: s for s in container.streams}
        info: dict[str, object] = {
            "duration": (container.duration or 0) / 1e6,
            "types": sorted(streams),
        }
        if "video" in streams:
            v: Any = streams["video"]
            info.update(
                vcodec=v.codec_context.name, size=(v.codec_context.width, v.codec_context.height)
            )
        frames = {"video": 0, "audio": 0}
        first_code = None
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                frames["video"] += 1
                first_code = first_code or read_pattern(frame)
            else:
                frames["audio"] += 1
        info["frames"] = frames
        info["first_code"] = first_code
    return info


async def test_remux_vp8_and_opus(
    tmp_path: Path, vp8_chunks: list[bytes], opus_chunks: list[bytes]
) -> None:
    rec = SideRecorder(tmp_path / "customer.mkv")
    start = time.monotonic()
    for item in interleave(
        as_encoded(vp8_chunks, VP8, 15, start), as_encoded(opus_chunks, OPUS, 50, start)
    ):
        rec.push(item)
    info = await rec.close()
    assert info.exists and info.error is None
    assert (info.video_frames, info.audio_frames, info.dropped) == (45, 150, 0)
    p = probe(info.path)
    assert p["types"] == ["audio", "video"]
    assert p["vcodec"] == "vp8" and p["size"] == (640, 480)
    assert p["frames"] == {"video": 45, "audio": 150}
    assert p["duration"] == pytest.approx(3.0, rel=0.1)
    assert p["first_code"] == (1, 0)
    assert await rec.close() is info  # idempotent


async def test_remux_h264(tmp_path: Path, h264_chunks: list[bytes]) -> None:
    rec = SideRecorder(tmp_path / "agent.mkv")
    for item in as_encoded(h264_chunks, H264, 15):
        rec.push(item)
    info = await rec.close()
    p = probe(info.path)
    assert p["vcodec"] == "h264" and p["size"] == (640, 480)
    assert p["frames"] == {"video": 30, "audio": 0}
    assert p["duration"] == pytest.approx(2.0, rel=0.1)


async def test_starts_at_keyframe_and_asks_for_one(tmp_path: Path, vp8_chunks: list[bytes]) -> None:
    asked: list[int] = []
    rec = SideRecorder(tmp_path / "c.mkv", on_keyframe_needed=lambda: asked.append(1))
    for item in as_encoded(vp8_chunks, VP8, 15)[5:]:
        rec.push(item)
    info = await rec.close()
    assert asked and info.dropped == 10
    p = probe(info.path)
    assert p["frames"] == {"video": 30, "audio": 0}
    assert p["first_code"] == (1, 15)


async def test_decode_mode_encodes_in_thread(tmp_path: Path) -> None:
    rec = SideRecorder(tmp_path / "c.mkv")
    start = time.monotonic()
    import fractions

    import numpy as np

    for i, frame in enumerate(pattern_frames(30, side=2, size=(320, 240))):
        frame.pts, frame.time_base = i * 6000, fractions.Fraction(1, 90000)
        rec.push(DecodedFrame("video", frame, start + i / 15))
        for j in range(3):
            n = i * 3 + j
            pcm = np.zeros((1, 960 * 2), dtype=np.int16)
            audio = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
            audio.sample_rate, audio.pts = 48000, n * 960
            audio.time_base = fractions.Fraction(1, 48000)
            rec.push(DecodedFrame("audio", audio, start + n / 50))
    info = await rec.close()
    assert info.error is None
    p = probe(info.path)
    assert p["vcodec"] == "vp8" and p["size"] == (320, 240)
    assert p["frames"]["video"] == 30  # type: ignore[index]
    assert p["first_code"] == (2, 0)
    assert p["duration"] == pytest.approx(2.0, rel=0.1)


async def test_audio_only_and_empty(tmp_path: Path, opus_chunks: list[bytes]) -> None:
    rec = SideRecorder(tmp_path / "a.mkv")
    for item in as_encoded(opus_chunks[:50], OPUS, 50):
        rec.push(item)
    info = await rec.close()
    assert probe(info.path)["types"] == ["audio"]

    empty = SideRecorder(tmp_path / "none.mkv")
    info = await empty.close()
    assert not info.exists and not (tmp_path / "none.mkv").exists()
    empty.push(as_encoded(opus_chunks[:1], OPUS, 50)[0])  # after close: ignored


def test_file_survives_abrupt_process_end(tmp_path: Path) -> None:
    """A crash mid-call leaves a readable file up to the last flushed cluster (~1 s)."""
    path = tmp_path / "crash.mkv"
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import VP8, as_encoded, pattern_frames
        from signaling.media.recorder import SideRecorder
        from signaling.media.testing import encode_vp8

        async def main():
            rec = SideRecorder(__import__("pathlib").Path({str(path)!r}))
            chunks = encode_vp8(pattern_frames(75), fps=15, gop=30)
            for item in as_encoded(chunks, VP8, 15):
                rec.push(item)
            await asyncio.sleep(1.0)   # let the writer thread catch up
            os._exit(0)                # no close(): no index, no duration

        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    p = probe(path)
    assert p["vcodec"] == "vp8"
    assert p["frames"]["video"] >= 45  # type: ignore[index]
