"""The track a server-side sender plays: the other party's media, bounded.

Each leg's peer connection gets, before the offer is applied, one sendrecv
transceiver per kind whose sender plays a :class:`RelayTrack` subscribed to the
*other* role's source. It emits nothing until that source produces, so either
leg may connect first and no renegotiation is needed when the other arrives.

In forwarding mode the track yields ``av.Packet``s that aiortc's sender packs
into RTP without encoding. Only when the two legs negotiated different video
codecs (e.g. VP8 one side, H.264 the other) does it decode, in a worker thread,
and hand frames to aiortc's encoder.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Executor
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpCodecParameters
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame

from .frames import DecodedFrame, EncodedFrame, MediaItem
from .source import MediaSource

logger = logging.getLogger(__name__)

KEYFRAME_RETRY_S = 1.0
DECODED_VIDEO_MAXLEN = 4


def same_codec(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    """Whether frames encoded for ``a`` can be sent unchanged as ``b``."""
    return a.mimeType.lower() == b.mimeType.lower() and a.clockRate == b.clockRate


class RelayTrack(MediaStreamTrack):
    """Bounded, drop-oldest proxy of a :class:`MediaSource` for one sender.

    Items are only queued once the sender has started reading (``recv``), so an
    unconnected leg holds nothing. For encoded video, the queue always starts at a
    keyframe: on overflow it is emptied and a keyframe requested, because sending
    frames after a gap would only show corruption until the next keyframe.
    """

    def __init__(
        self, source: MediaSource, *, maxlen: int, executor: Executor | None = None
    ) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._maxlen = maxlen
        self._queue: deque[MediaItem] = deque()
        self._event = asyncio.Event()
        self._active = False
        self._source_ended = False
        self._need_keyframe = source.kind == "video"
        self._sink_codec: RTCRtpCodecParameters | None = None
        self._executor = executor
        self._decoder: Decoder | None = None
        self._decoder_codec: str | None = None
        self._decoded: deque[Frame] = deque()
        self.dropped = 0
        self.sent = 0
        self.transcoded = 0
        source.subscribe(self)

    def set_sink_codec(self, codec: RTCRtpCodecParameters | None) -> None:
        """The codec the sender negotiated; differing sources get transcoded."""
        self._sink_codec = codec

    # -- Subscriber -------------------------------------------------------------------------

    def push(self, item: MediaItem) -> None:
        if not self._active or self.readyState != "live":
            return
        if isinstance(item, EncodedFrame) and self.kind == "video":
            if self._need_keyframe and not item.keyframe:
                self.dropped += 1
                return
            self._need_keyframe = False
            if len(self._queue) >= self._maxlen:
                self.dropped += len(self._queue)
                self._queue.clear()
                if not item.keyframe:
                    self.dropped += 1
                    self._need_keyframe = True
                    self._source.request_keyframe()
                    return
        else:
            self._need_keyframe = False
            limit = self._maxlen
            if self.kind == "video" and isinstance(item, DecodedFrame):
                # decoded video waits for aiortc's encoder: keep latency to a few frames
                limit = min(limit, DECODED_VIDEO_MAXLEN)
            while len(self._queue) >= limit:
                self._queue.popleft()
                self.dropped += 1
        self._queue.append(item)
        self._event.set()

    def source_ended(self) -> None:
        self._source_ended = True
        self._event.set()

    # -- MediaStreamTrack -------------------------------------------------------------------

    async def recv(self) -> Frame | av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._active:
            self._active = True
            if self._need_keyframe:
                self._source.request_keyframe()
        while True:
            if self._decoded:
                self.sent += 1
                return self._decoded.popleft()
            while not self._queue:
                if self._source_ended:
                    self.stop()
                    raise MediaStreamError
                self._event.clear()
                if not self._need_keyframe:
                    await self._event.wait()
                    continue
                try:
                    async with asyncio.timeout(KEYFRAME_RETRY_S):
                        await self._event.wait()
                except TimeoutError:
                    self._source.request_keyframe()
            item = self._queue.popleft()
            if isinstance(item, DecodedFrame):
                self.sent += 1
                return item.frame
            sink = self._sink_codec
            if sink is None or same_codec(item.codec, sink):
                self.sent += 1
                return item.to_packet()
            await self._transcode(item)

    def stop(self) -> None:
        super().stop()
        self._source.unsubscribe(self)
        self._queue.clear()
        self._decoded.clear()
        self._decoder = None

    async def _transcode(self, item: EncodedFrame) -> None:
        """Decode in a worker thread; aiortc's sender then encodes for the sink codec."""
        if self._decoder is None or self._decoder_codec != item.codec.mimeType:
            self._decoder = get_decoder(item.codec)
            self._decoder_codec = item.codec.mimeType
        decoder = self._decoder
        loop = asyncio.get_running_loop()
        try:
            frames = await loop.run_in_executor(
                self._executor, decoder.decode, JitterFrame(item.data, item.timestamp)
            )
        except av.FFmpegError:
            logger.warning("relay transcode: %s frame failed to decode", item.codec.name)
            self._need_keyframe = self.kind == "video"
            self._queue.clear()
            self._source.request_keyframe()
            return
        self.transcoded += len(frames)
        self._decoded.extend(frames)
