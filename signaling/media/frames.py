"""Media items passed from a received track to its consumers, and codec sniffing.

Two kinds of item flow through :class:`~signaling.media.source.MediaSource`:

* :class:`EncodedFrame`: a depacketised frame as it left the jitter buffer
  (forwarding mode, no decode);
* :class:`DecodedFrame`: an ``av`` frame out of aiortc's decoder (decode mode).

Keyframe detection is pure byte inspection so that the relay, the recorder and
the tap can start a stream at a decodable point without decoding anything.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from typing import Any, Literal

import av
from aiortc import RTCRtpCodecParameters

Kind = Literal["audio", "video"]

_VP8_START_CODE = b"\x9d\x01\x2a"
_H264_IDR = 5
_H264_SPS = 7


def is_vp8_keyframe(data: bytes) -> bool:
    """True if ``data`` (one VP8 frame) is a key frame (RFC 6386 §9.1: P bit clear)."""
    return len(data) >= 3 and not data[0] & 0x01


def vp8_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header, or None for other frames."""
    if len(data) < 10 or not is_vp8_keyframe(data) or data[3:6] != _VP8_START_CODE:
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


def h264_nal_types(data: bytes) -> list[int]:
    """NAL unit types of an Annex B byte stream (aiortc depayloads H.264 to Annex B)."""
    types: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1 and pos + 3 < len(data):
        types.append(data[pos + 3] & 0x1F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


def is_h264_keyframe(data: bytes) -> bool:
    """True if the access unit holds an IDR slice (decodable without history)."""
    return _H264_IDR in h264_nal_types(data)


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Keyframe test by codec; audio codecs have no inter-frame dependency."""
    name = codec_name.lower()
    if name == "vp8":
        return is_vp8_keyframe(data)
    if name == "h264":
        return is_h264_keyframe(data)
    return True


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One complete encoded frame from a remote peer, as forwarded without decoding."""

    kind: Kind
    codec: RTCRtpCodecParameters
    data: bytes
    timestamp: int
    """RTP timestamp unwrapped by aiortc so the stream starts at 0, in codec clock units."""
    keyframe: bool
    arrival: float
    """``time.monotonic()`` when the frame was completed by the jitter buffer."""

    @property
    def codec_name(self) -> str:
        return self.codec.name

    @property
    def time(self) -> float:
        """Media time in seconds since the start of the remote stream."""
        return self.timestamp / self.codec.clockRate

    def to_packet(self) -> av.Packet[Any]:
        """An ``av.Packet`` that aiortc's RTCRtpSender sends as is (no re-encode)."""
        packet = av.Packet(self.data)
        packet.pts = self.timestamp
        packet.time_base = fractions.Fraction(1, self.codec.clockRate)
        return packet


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A frame out of aiortc's decoder (decode mode), with its arrival time."""

    kind: Kind
    frame: av.VideoFrame | av.AudioFrame
    arrival: float

    @property
    def keyframe(self) -> bool:
        return True

    @property
    def time(self) -> float:
        t = self.frame.time
        return float(t) if t is not None else 0.0


MediaItem = EncodedFrame | DecodedFrame
