"""Keyframe sniffing on real encoder output."""

from __future__ import annotations

from signaling.media.frames import (
    h264_nal_types,
    is_h264_keyframe,
    is_keyframe,
    is_vp8_keyframe,
    vp8_dimensions,
)

from .conftest import OPUS, VP8, as_encoded


def test_vp8_keyframes_every_gop(vp8_chunks: list[bytes]) -> None:
    keys = [i for i, c in enumerate(vp8_chunks) if is_vp8_keyframe(c)]
    assert keys[:3] == [0, 15, 30]
    assert vp8_dimensions(vp8_chunks[0]) == (640, 480)
    assert vp8_dimensions(vp8_chunks[1]) is None


def test_h264_first_access_unit_is_idr(h264_chunks: list[bytes]) -> None:
    types = h264_nal_types(h264_chunks[0])
    assert 7 in types and 8 in types and 5 in types
    assert is_h264_keyframe(h264_chunks[0])
    assert not is_h264_keyframe(h264_chunks[1])
    assert is_keyframe("H264", h264_chunks[0])


def test_short_or_audio_data() -> None:
    assert not is_vp8_keyframe(b"\x00")
    assert h264_nal_types(b"") == []
    assert is_keyframe("opus", b"\x01")


def test_encoded_frame_packet_and_time(vp8_chunks: list[bytes], opus_chunks: list[bytes]) -> None:
    video = as_encoded(vp8_chunks[:3], VP8, fps=15)
    assert video[0].keyframe and not video[1].keyframe
    assert abs(video[2].time - 2 / 15) < 1e-6
    packet = video[1].to_packet()
    assert bytes(packet) == vp8_chunks[1]
    assert packet.pts == 6000 and packet.time_base.denominator == 90000
    audio = as_encoded(opus_chunks[:2], OPUS, fps=50)
    assert audio[1].to_packet().pts == 960
