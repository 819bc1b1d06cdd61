"""Reference photo decoding and refusals, on real photos and hand-built hostile files."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vbank.identity import images
from vbank.identity.images import ImageRejected

PHOTOS = Path(__file__).resolve().parents[2] / "data" / "faces" / "photos"

DOGS = PHOTOS / "davisking__dlib/examples/faces/dogs.jpg"
GROUP = PHOTOS / "serengil__deepface/tests/unit/dataset/selfie-many-people.jpg"
KIT = PHOTOS / "ageitgey__face_recognition/examples/knn_examples/train/kit_harington/john1.jpeg"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A ~100 kB PNG whose header declares 50000×50000 grey pixels (2.5 GB decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 100, 9)  # first 100 rows; enough to look real
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def reject_code(data: bytes) -> str:
    with pytest.raises(ImageRejected) as exc:
        images.load_reference(data)
    return exc.value.code


def test_dogs_have_no_face() -> None:
    assert reject_code(DOGS.read_bytes()) == "no_face"


def test_group_photo_has_several_faces() -> None:
    assert reject_code(GROUP.read_bytes()) == "several_faces"


def test_tiny_face_is_too_small(read_rgb: Callable[[Path], np.ndarray]) -> None:
    # Kit Harington's face box (125 px) shrunk to 45 px on a grey card: found only by the
    # upsampled pass, and refused as too small rather than as "no face".
    photo = read_rgb(KIT)
    box = images.find_reference_face(photo).box
    crop = photo[
        max(0, box.top - box.height) : box.bottom + box.height,
        max(0, box.left - box.width) : box.right + box.width,
    ]
    scale = 45 / box.width
    small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    card = np.full((300, 300, 3), 128, np.uint8)
    card[100 : 100 + small.shape[0], 100 : 100 + small.shape[1]] = small
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(card, cv2.COLOR_RGB2BGR))
    assert ok
    assert reject_code(jpeg.tobytes()) == "face_too_small"


def test_text_file_is_not_an_image() -> None:
    assert reject_code(b"Name,IBAN\nAlice,DE89 3704 0044 0532 0130 00\n") == "not_an_image"


def test_50_mb_file_is_too_large_before_parsing() -> None:
    data = b"\xff\xd8\xff" + bytes(50 * 1024 * 1024)
    assert reject_code(data) == "too_large"


def test_decompression_bomb_is_refused_from_its_header() -> None:
    data = bomb_png()
    assert len(data) < 200_000
    assert images.image_size(data, "png") == (50_000, 50_000)
    assert reject_code(data) == "too_many_pixels"


def test_truncated_png_is_not_an_image() -> None:
    data = bomb_png(64, 64)[:40]
    assert reject_code(data) == "not_an_image"


@pytest.mark.parametrize(
    ("ext", "params", "fmt"),
    [
        (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90], "jpeg"),
        (".png", [], "png"),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], "webp"),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], "webp"),  # lossless (VP8L)
    ],
)
def test_header_size_matches_decoded_size(
    ext: str, params: list[int], fmt: str, read_rgb: Callable[[Path], np.ndarray]
) -> None:
    rgb = read_rgb(KIT)[:301, :257]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    data = buf.tobytes()
    assert images.sniff_format(data) == fmt
    assert images.image_size(data, fmt) == (257, 301)
    decoded = images.decode_image(data)
    assert decoded.shape == (301, 257, 3)
    # RGB, not BGR: the mean colour of the crop survives the round trip.
    assert np.abs(decoded.mean(axis=(0, 1)) - rgb.mean(axis=(0, 1))).max() < 3


def test_pixel_limit_is_configurable() -> None:
    ok, buf = cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))
    assert ok
    with pytest.raises(ImageRejected) as exc:
        images.decode_image(buf.tobytes(), max_pixels=9_999)
    assert exc.value.code == "too_many_pixels"


def test_reference_face_of_a_real_photo() -> None:
    face = images.load_reference(KIT.read_bytes())
    assert face.scale == 1.0 or max(face.original_size) > images.WORK_MAX_SIDE
    assert face.box.width > 100
    assert face.landmarks.shape == (68, 2)
    # Landmarks lie inside (or just around) the face box.
    assert face.box.left - 20 <= face.landmarks[:, 0].min()
    assert face.landmarks[:, 0].max() <= face.box.right + 20


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(
        [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP"]
    ),
    body=st.binary(max_size=64),
)
def test_garbage_is_refused_cleanly(prefix: bytes, body: bytes) -> None:
    """Any byte string is either decoded or refused with ImageRejected, never another error."""
    try:
        images.decode_image(prefix + body)
    except ImageRejected as exc:
        assert exc.code in ("not_an_image", "too_many_pixels")
