"""Recording of one party's audio and video to a Matroska file, off the event loop.

Why Matroska: it takes VP8, H.264 and Opus as they come off the wire, so the
forwarded stream is remuxed without transcoding, and with short clusters that
are flushed as they close, a file cut short by a crash still opens and plays
up to the last second or so (MP4 would be unreadable without its index).

All container work (and, in decode mode, the encoding) runs in one worker
thread per file. The event loop only appends to a bounded queue.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.container

from .frames import DecodedFrame, EncodedFrame, MediaItem, vp8_dimensions

logger = logging.getLogger(__name__)

MS = fractions.Fraction(1, 1000)
CONTAINER_OPTIONS = {
    "cluster_time_limit": "1000",
    "flush_packets": "1",
    # a silent stream must not hold the others in the interleaving queue (default 10 s)
    "max_interleave_delta": "1000000",
}
VIDEO_WAIT_S = 5.0
"""How long buffered audio waits for the first video keyframe before the file is
opened audio-only (the container's streams are fixed when its header is written)."""
MAX_PENDING_AUDIO = 400
WAKE_BATCH = 64
WAKE_INTERVAL_S = 0.25
DEFAULT_SIZE = (640, 480)


@dataclass(frozen=True)
class RecordingInfo:
    """What a finished recording holds."""

    path: Path
    exists: bool
    video_frames: int
    audio_frames: int
    dropped: int
    duration: float
    """Seconds from the first to the last item written."""
    error: str | None = None


class SideRecorder:
    """Subscriber writing one party's media to ``path`` from a worker thread.

    The queue is bounded; when it is full the newest item is dropped (not the
    oldest) and video then waits for a keyframe, so what was already queued
    stays a decodable stream. ``on_keyframe_needed`` asks the source for one.
    """

    def __init__(
        self,
        path: Path,
        *,
        maxlen: int = 600,
        on_keyframe_needed: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self._maxlen = maxlen
        self._on_keyframe_needed = on_keyframe_needed
        self._cond = threading.Condition()
        self._items: deque[MediaItem] = deque()
        self._closing = False
        self._dropped = 0
        self._video_need_keyframe = True
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future[RecordingInfo] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info: RecordingInfo | None = None

    def push(self, item: MediaItem) -> None:
        need_keyframe = False
        with self._cond:
            if self._closing:
                return
            if isinstance(item, EncodedFrame) and item.kind == "video":
                if self._video_need_keyframe and not item.keyframe:
                    self._dropped += 1
                    need_keyframe = True
                else:
                    self._video_need_keyframe = False
            if not need_keyframe:
                if len(self._items) >= self._maxlen:
                    self._dropped += 1
                    if item.kind == "video":
                        self._video_need_keyframe = True
                        need_keyframe = True
                else:
                    self._items.append(item)
                    if len(self._items) == WAKE_BATCH:
                        self._cond.notify()
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._run, name=f"media-rec-{self.path.stem}", daemon=True
            )
            self._thread.start()
        if need_keyframe and self._on_keyframe_needed is not None:
            self._on_keyframe_needed()

    def source_ended(self) -> None:
        """Nothing to do: the session closes the recorder once all sources ended."""

    async def close(self) -> RecordingInfo:
        """Drain the queue, finalise the file (index, duration) and wait for the thread."""
        if self._info is not None:
            return self._info
        loop = asyncio.get_running_loop()
        if self._done is None:
            self._done = loop.create_future()
            with self._cond:
                self._closing = True
                self._cond.notify()
            if self._thread is None:
                self._done.set_result(RecordingInfo(self.path, False, 0, 0, self._dropped, 0.0))
        info = await asyncio.shield(self._done)
        if self._thread is not None:
            # it resolved ``done`` as its last act: this join returns at once
            self._thread.join(1.0)
        self._info = info
        return info

    def _run(self) -> None:
        writer = _MkvWriter(self.path)
        error: str | None = None
        while True:
            with self._cond:
                # wake per batch or per interval, not per frame: every wake-up is a
                # GIL hand-over that costs the event loop far more than the muxing
                if len(self._items) < WAKE_BATCH and not self._closing:
                    self._cond.wait(WAKE_INTERVAL_S)
                batch = list(self._items)
                self._items.clear()
                closing = self._closing
            for item in batch:
                try:
                    writer.write(item)
                except Exception as exc:
                    if error is None:
                        logger.exception("recorder could not write a %s frame", item.kind)
                        error = repr(exc)
            if closing and not batch:
                break
        with self._cond:
            dropped = self._dropped
        info = writer.close(dropped, error)
        loop, done = self._loop, self._done
        if loop is not None and done is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, done, info)


def _resolve(future: asyncio.Future[RecordingInfo], info: RecordingInfo) -> None:
    if not future.done():
        future.set_result(info)


class _StreamClock:
    """Maps a stream's media time to file time: arrival offset + RTP-clock delta.

    Each stream's own RTP clock keeps its frames evenly spaced; anchoring the
    first frame at its arrival time lines audio and video up to within the
    network jitter (there is no RTCP sender-report sync in aiortc to use).
    """

    def __init__(self, offset: float, first_time: float) -> None:
        self.offset = offset
        self.first_time = first_time
        self.last = -1

    def pts(self, media_time: float, units: int) -> int:
        pts = round((self.offset + media_time - self.first_time) * units)
        if pts <= self.last:
            pts = self.last + 1
        self.last = pts
        return pts


class _MkvWriter:
    """Container state, used from the recorder thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container: av.container.OutputContainer | None = None
        self.video_stream: Any = None
        self.audio_stream: Any = None
        self.video_encode = False
        self.audio_encode = False
        self.t0: float | None = None
        self.clocks: dict[str, _StreamClock] = {}
        self.pending_audio: deque[MediaItem] = deque(maxlen=MAX_PENDING_AUDIO)
        self.video_frames = 0
        self.audio_frames = 0
        self.last_ms = 0
        self.late_video_logged = False

    def write(self, item: MediaItem) -> None:
        if self.t0 is None:
            self.t0 = item.arrival
        if item.kind == "video":
            if self.container is None:
                self._open(video=item)
            self._write_video(item)
        elif self.container is None:
            self.pending_audio.append(item)
            if item.arrival - self.pending_audio[0].arrival > VIDEO_WAIT_S:
                self._open(video=None)
        else:
            self._write_audio(item)

    def _open(self, video: MediaItem | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), "w", format="matroska", options=CONTAINER_OPTIONS)
        self.container = container
        if video is not None:
            self.video_stream = self._add_video_stream(container, video)
        has_audio = bool(self.pending_audio)
        if has_audio or video is not None:
            # declare audio even if none arrived yet: it normally trails video by ms
            stream: Any = container.add_stream("libopus", rate=48000)
            stream.codec_context.layout = "stereo"
            stream.time_base = MS
            self.audio_stream = stream
        pending, self.pending_audio = list(self.pending_audio), deque()
        for item in pending:
            self._write_audio(item)

    def _add_video_stream(self, container: av.container.OutputContainer, item: MediaItem) -> Any:
        stream: Any
        if isinstance(item, DecodedFrame):
            self.video_encode = True
            frame = item.frame
            stream = container.add_stream("libvpx", rate=30)
            stream.width = getattr(frame, "width", DEFAULT_SIZE[0])
            stream.height = getattr(frame, "height", DEFAULT_SIZE[1])
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = MS
            stream.codec_context.bit_rate = 1_000_000
            stream.codec_context.thread_count = 1
            stream.codec_context.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
            }
            stream.time_base = MS
            return stream
        name = item.codec_name.lower()
        width, height = _video_size(name, item.data)
        add_mux = getattr(container, "add_mux_stream", None)
        if add_mux is not None:
            stream = add_mux(name, width=width, height=height)
        else:  # PyAV < 17: an (unused) encoder context carries the parameters
            stream = container.add_stream(name)
            stream.width, stream.height = width, height
        stream.time_base = MS
        return stream

    def _clock(self, item: MediaItem) -> _StreamClock:
        clock = self.clocks.get(item.kind)
        if clock is None:
            assert self.t0 is not None
            clock = _StreamClock(max(0.0, item.arrival - self.t0), item.time)
            self.clocks[item.kind] = clock
        return clock

    def _write_video(self, item: MediaItem) -> None:
        if self.container is None or self.video_stream is None:
            if not self.late_video_logged:
                self.late_video_logged = True
                logger.warning("video arrived after the recording started audio-only")
            return
        pts = self._clock(item).pts(item.time, 1000)
        if isinstance(item, EncodedFrame):
            packet = av.Packet(item.data)
            packet.stream = self.video_stream
            packet.pts = packet.dts = pts
            packet.time_base = MS
            packet.is_keyframe = item.keyframe
            self.container.mux(packet)
        elif isinstance(item.frame, av.VideoFrame):
            # copy: the decoded frame is shared with the relay's encoder thread
            frame = av.VideoFrame.from_ndarray(
                item.frame.to_ndarray(format="yuv420p"), format="yuv420p"
            )
            frame.pts = pts
            frame.time_base = MS
            self.container.mux(self.video_stream.encode(frame))
        self.video_frames += 1
        self.last_ms = max(self.last_ms, pts)

    def _write_audio(self, item: MediaItem) -> None:
        if self.container is None or self.audio_stream is None:
            return
        clock = self._clock(item)
        if isinstance(item, EncodedFrame):
            pts = clock.pts(item.time, 1000)
            packet = av.Packet(item.data)
            packet.stream = self.audio_stream
            packet.pts = packet.dts = pts
            packet.time_base = MS
            self.container.mux(packet)
            self.last_ms = max(self.last_ms, pts)
        elif isinstance(item.frame, av.AudioFrame):
            src = item.frame
            rate = src.sample_rate
            pts = clock.pts(item.time, rate)
            frame = av.AudioFrame.from_ndarray(
                src.to_ndarray(), format=src.format.name, layout=src.layout.name
            )
            frame.sample_rate = rate
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, rate)
            self.container.mux(self.audio_stream.encode(frame))
            self.audio_encode = True
            self.last_ms = max(self.last_ms, pts * 1000 // rate)
        self.audio_frames += 1

    def close(self, dropped: int, error: str | None) -> RecordingInfo:
        try:
            if self.container is None and self.pending_audio:
                self._open(video=None)
            if self.container is not None:
                if self.video_encode and self.video_stream is not None:
                    self.container.mux(self.video_stream.encode(None))
                if self.audio_encode and self.audio_stream is not None:
                    self.container.mux(self.audio_stream.encode(None))
                self.container.close()
        except Exception as exc:
            logger.exception("recording could not be finalised")
            error = error or repr(exc)
        return RecordingInfo(
            path=self.path,
            exists=self.container is not None and self.path.exists(),
            video_frames=self.video_frames,
            audio_frames=self.audio_frames,
            dropped=dropped,
            duration=self.last_ms / 1000,
            error=error,
        )


def _video_size(codec_name: str, keyframe: bytes) -> tuple[int, int]:
    """Frame size for the container header, read from the first keyframe."""
    if codec_name == "vp8":
        return vp8_dimensions(keyframe) or DEFAULT_SIZE
    try:
        ctx: Any = av.CodecContext.create(codec_name, "r")
        for frame in ctx.decode(av.Packet(keyframe)):
            if isinstance(frame, av.VideoFrame):
                return frame.width, frame.height
    except av.FFmpegError:
        pass
    return DEFAULT_SIZE
