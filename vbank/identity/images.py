"""Safe decoding of uploaded reference photos, and finding the one face in them.

Uploads are hostile input: the byte size is checked before anything else, the format is sniffed
from magic bytes (never from the file name or the client's content type), and the pixel
dimensions are read from the header *before* decoding so that a tiny file declaring a huge image
(a decompression bomb) is refused without allocating its pixels.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from vbank.identity import _models
from vbank.identity._models import Box, Landmarks, RGBImage

logger = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024
"""Default upload limit: a phone photo is 2-6 MB; anything larger is refused before decoding."""

MAX_PIXELS = 40_000_000
"""Refuse images declaring more pixels (40 MP ≈ 120 MB of RGB once decoded)."""

WORK_MAX_SIDE = 1280
"""Reference photos are detected and encoded at most this large (the encoder uses a 150 px chip)."""

MIN_FACE_PX = 60
"""Smallest acceptable face box width in the *original* photo (dlib's box spans brows to chin).

Below this the 150×150 chip the encoder sees is mostly interpolation, and the distance to the same
person's live face grows towards the threshold.
"""

SEVERAL_FACES_RATIO = 0.5
"""A second face at least this fraction of the largest face's width makes the photo ambiguous."""

RejectCode = Literal[
    "too_large", "not_an_image", "too_many_pixels", "no_face", "several_faces", "face_too_small"
]
ImageFormat = Literal["jpeg", "png", "webp"]


class ImageRejected(ValueError):
    """An upload that cannot serve as a reference photo; ``code`` is stable, for the UI."""

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: RejectCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ReferenceFace:
    """The single face found in a reference photo, at working resolution."""

    image: RGBImage
    """The photo, downscaled so its longest side is at most :data:`WORK_MAX_SIDE`."""
    box: Box
    landmarks: Landmarks
    scale: float
    """``working pixels / original pixels`` (1.0 when the photo was small enough)."""
    original_size: tuple[int, int]
    """(width, height) of the uploaded photo."""


def sniff_format(data: bytes) -> ImageFormat | None:
    """The image format from its magic bytes, or None for anything but JPEG/PNG/WebP."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageRejected("not_an_image", "PNG without an IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            break
        pos += 2 + length
    raise ImageRejected("not_an_image", "JPEG without a readable frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise ImageRejected("not_an_image", "WebP without a readable frame header")


def image_size(data: bytes, fmt: ImageFormat) -> tuple[int, int]:
    """(width, height) as declared by the header, without decoding any pixels."""
    if fmt == "png":
        return _png_size(data)
    if fmt == "jpeg":
        return _jpeg_size(data)
    return _webp_size(data)


def decode_image(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> RGBImage:
    """Decode an uploaded JPEG/PNG/WebP to an RGB uint8 array, refusing anything unsafe.

    Checks run cheapest first: byte size, magic bytes, declared dimensions, then the decode.
    EXIF orientation is applied (phone photos are often stored rotated).
    """
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"{len(data)} bytes, the limit is {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected("not_an_image", "not a JPEG, PNG or WebP image")
    width, height = image_size(data, fmt)
    if width <= 0 or height <= 0:
        raise ImageRejected("not_an_image", f"declared size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels", f"{width}x{height} declared, the limit is {max_pixels} pixels"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ImageRejected("not_an_image", f"the {fmt} data could not be decoded")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:  # header lied (e.g. a second frame)
        raise ImageRejected("too_many_pixels", "decoded image exceeds the pixel limit")
    rgb: RGBImage = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return rgb


def to_working_size(image: RGBImage, max_side: int = WORK_MAX_SIDE) -> tuple[RGBImage, float]:
    """Downscale (area filter) so the longest side is at most ``max_side``; returns the scale."""
    h, w = image.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small: RGBImage = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return small, scale


def find_reference_face(
    image: RGBImage, *, min_face_px: int = MIN_FACE_PX, several_ratio: float = SEVERAL_FACES_RATIO
) -> ReferenceFace:
    """Find the one face of a reference photo, or raise ImageRejected (no/several/too small).

    HOG without upsampling finds faces of about 80 px and more at working size; only if it finds
    none is the slower 2× upsampled pass run (faces down to about 40 px, e.g. an ID card photo),
    so that a too-small face is reported as such rather than as ``no_face``.
    """
    original_size = (int(image.shape[1]), int(image.shape[0]))
    work, scale = to_working_size(image)
    boxes = _models.detect(work, upsample=0)
    if not boxes:
        boxes = _models.detect(work, upsample=1)
    if not boxes:
        raise ImageRejected("no_face", "no face found in the photo")
    main = boxes[0]
    others = [b for b in boxes[1:] if b.width >= several_ratio * main.width]
    if others:
        raise ImageRejected(
            "several_faces", f"{1 + len(others)} faces of similar size; the photo must show one"
        )
    width_original = main.width / scale
    if width_original < min_face_px:
        raise ImageRejected(
            "face_too_small",
            f"the face is {width_original:.0f} px wide, at least {min_face_px} px are needed",
        )
    points = _models.landmarks(work, main)
    logger.debug("reference face %s at scale %.3f (%d other faces)", main, scale, len(boxes) - 1)
    return ReferenceFace(work, main, points, scale, original_size)


def load_reference(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> ReferenceFace:
    """Decode an uploaded reference photo and find its single face (raises ImageRejected)."""
    return find_reference_face(decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels))
