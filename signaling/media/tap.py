"""Latest-frame access to the customer's video for identity checks.

The tap never queues frames for a consumer. In forwarding mode it keeps only
the encoded frames since the decoder's last state (bounded); a caller asking
for a frame gets those decoded in a worker thread and receives the newest one.
If nobody asks for a while the chain overflows and is dropped, and the next
request asks the customer's browser for a keyframe instead: so a check every
few seconds costs one keyframe decode, not a decode of every frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame

from .frames import DecodedFrame, EncodedFrame, MediaItem

logger = logging.getLogger(__name__)

KEYFRAME_RETRY_S = 1.0


class TapClosedError(Exception):
    """The video ended; no further frames will come."""


@dataclass(frozen=True)
class TapFrame:
    """A decoded customer video frame."""

    frame: av.VideoFrame
    timestamp: float
    """Media seconds since the customer's video started (RTP clock); increases."""
    arrival: float
    """``time.monotonic()`` when the frame reached the server."""
    _rgb: list[npt.NDArray[np.uint8]] = field(default_factory=list, repr=False, compare=False)

    @property
    def width(self) -> int:
        return self.frame.width

    @property
    def height(self) -> int:
        return self.frame.height

    def to_rgb(self) -> npt.NDArray[np.uint8]:
        """H x W x 3 uint8 RGB array (converted once, then cached)."""
        if not self._rgb:
            self._rgb.append(np.asarray(self.frame.to_ndarray(format="rgb24"), dtype=np.uint8))
        return self._rgb[0]


class LatestFrameTap:
    """Bounded latest-frame subscriber of one video source.

    ``request_keyframe`` is the source's (rate-limited) keyframe request.
    """

    def __init__(
        self,
        request_keyframe: Callable[[], None],
        *,
        executor: Executor | None = None,
        max_chain: int = 90,
    ) -> None:
        self._request_keyframe = request_keyframe
        self._executor = executor
        self._max_chain = max_chain
        self._chain: list[EncodedFrame] = []
        self._synced = False
        self._newest_time: float | None = None
        self._latest: TapFrame | None = None
        self._decoder: Decoder | None = None
        self._decoder_codec: str | None = None
        self._decode_lock = asyncio.Lock()
        self._event = asyncio.Event()
        self._closed = False
        self.decoded_frames = 0
        self.decode_errors = 0

    # -- Subscriber -------------------------------------------------------------------------

    def push(self, item: MediaItem) -> None:
        if self._closed or item.kind != "video":
            return
        if isinstance(item, DecodedFrame):
            if isinstance(item.frame, av.VideoFrame):
                self._latest = TapFrame(item.frame, item.time, item.arrival)
                self._newest_time = item.time
                self._event.set()
            return
        if item.keyframe:
            self._chain = [item]
            self._synced = True
        elif not self._synced:
            return
        elif len(self._chain) >= self._max_chain:
            # nobody asked for a while: forget the chain, a keyframe restarts it
            self._chain = []
            self._synced = False
            return
        else:
            self._chain.append(item)
        self._newest_time = item.time
        self._event.set()

    def source_ended(self) -> None:
        self.close()

    # -- public API -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        """Encoded frames held (bounded by ``max_chain``)."""
        return len(self._chain)

    def latest(self) -> TapFrame | None:
        """The most recently decoded frame, without decoding anything new."""
        return self._latest

    async def next_frame(self, after_ts: float | None = None) -> TapFrame:
        """The newest frame with ``timestamp > after_ts`` (any frame if None).

        Waits for one as long as it takes: bound it with ``asyncio.timeout()``.
        Raises :class:`TapClosedError` once the video has ended.
        """
        while True:
            if self._closed:
                raise TapClosedError
            if self._chain:
                # one pass only: under a steady stream the chain refills while decoding
                await self._decode_chain()
            latest = self._latest
            if latest is not None and (after_ts is None or latest.timestamp > after_ts):
                return latest
            if self._chain or self._closed:
                continue
            if not self._synced:
                self._request_keyframe()
            self._event.clear()
            try:
                async with asyncio.timeout(KEYFRAME_RETRY_S):
                    await self._event.wait()
            except TimeoutError:
                pass

    def close(self) -> None:
        self._closed = True
        self._chain = []
        self._decoder = None
        self._event.set()

    # -- decoding ---------------------------------------------------------------------------

    async def _decode_chain(self) -> None:
        async with self._decode_lock:
            batch, self._chain = self._chain, []
            if not batch:
                return
            codec = batch[-1].codec
            if self._decoder is None or self._decoder_codec != codec.mimeType:
                self._decoder = get_decoder(codec)
                self._decoder_codec = codec.mimeType
            decoder = self._decoder
            loop = asyncio.get_running_loop()
            try:
                frame = await loop.run_in_executor(self._executor, _decode_batch, decoder, batch)
            except av.FFmpegError:
                self.decode_errors += 1
                logger.warning("tap could not decode customer video; asking for a keyframe")
                self._synced = False
                self._chain = []
                self._request_keyframe()
                return
            self.decoded_frames += len(batch)
            if frame is not None and not self._closed:
                last = batch[-1]
                self._latest = TapFrame(frame, last.time, last.arrival)


def _decode_batch(decoder: Decoder, batch: list[EncodedFrame]) -> av.VideoFrame | None:
    """Feed frames in order (decoder state must stay continuous); keep the last picture."""
    last: av.VideoFrame | None = None
    for item in batch:
        for frame in decoder.decode(JitterFrame(item.data, item.timestamp)):
            if isinstance(frame, av.VideoFrame):
                last = frame
    return last
