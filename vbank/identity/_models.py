"""Lazy access to dlib's detector, 68-point shape predictor and face encoder.

The models take about two seconds and ~100 MB to load, so they are loaded once per process
(the pool's worker initializer calls :func:`load_models`) and never on import, which keeps
``import vbank.identity`` cheap for the web process. Everything returned from here is plain
numpy / tuples so that results cross process boundaries without dlib objects.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

RGBImage = npt.NDArray[np.uint8]
"""An H×W×3 uint8 RGB image (C-contiguous)."""

Landmarks = npt.NDArray[np.float64]
"""68×2 float array of (x, y) landmark positions in image pixels (iBUG 300-W order)."""

Encoding = npt.NDArray[np.float64]
"""A 128-dimensional dlib face descriptor."""


@dataclass(frozen=True, slots=True)
class Box:
    """A face box in image pixels (left/top inclusive, right/bottom exclusive)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> Box:
        """Box in another coordinate frame: ``x' = x * factor + dx``."""
        return Box(
            round(self.left * factor + dx),
            round(self.top * factor + dy),
            round(self.right * factor + dx),
            round(self.bottom * factor + dy),
        )


@dataclass(frozen=True, slots=True)
class _Models:
    detector: Any
    predictor: Any
    encoder: Any


@functools.cache
def _models() -> _Models:
    with warnings.catch_warnings():
        # face_recognition_models imports pkg_resources, which warns on every import.
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition.api as fr_api

    logger.info("dlib face models loaded")
    return _Models(fr_api.face_detector, fr_api.pose_predictor_68_point, fr_api.face_encoder)


def load_models() -> None:
    """Load the dlib models now (pool initializer, service start-up) instead of on first use."""
    _models()


def _as_dlib_image(image: RGBImage) -> RGBImage:
    if image.dtype != np.uint8 or not image.flags.c_contiguous:
        return np.ascontiguousarray(image, dtype=np.uint8)
    return image


def detect(image: RGBImage, upsample: int = 0) -> list[Box]:
    """HOG face detection; boxes are clipped to the image and sorted largest first."""
    h, w = image.shape[:2]
    rects = _models().detector(_as_dlib_image(image), upsample)
    boxes = [
        Box(max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom())) for r in rects
    ]
    boxes = [b for b in boxes if b.width > 0 and b.height > 0]
    boxes.sort(key=lambda b: b.area, reverse=True)
    return boxes


def landmarks(image: RGBImage, box: Box) -> Landmarks:
    """The 68 iBUG landmarks of the face in ``box``."""
    import dlib

    rect = dlib.rectangle(box.left, box.top, box.right, box.bottom)
    shape = _models().predictor(_as_dlib_image(image), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _full_object_detection(box: Box, points: Landmarks) -> Any:
    import dlib

    rect = dlib.rectangle(box.left, box.top, box.right, box.bottom)
    parts = [dlib.point(round(float(x)), round(float(y))) for x, y in points]
    return dlib.full_object_detection(rect, parts)


def encode(image: RGBImage, box: Box, points: Landmarks, jitters: int = 0) -> Encoding:
    """dlib's 128-D descriptor for a face whose landmarks are already known (no re-detection)."""
    shape = _full_object_detection(box, points)
    descriptor = _models().encoder.compute_face_descriptor(_as_dlib_image(image), shape, jitters)
    return np.asarray(descriptor, dtype=np.float64)


def box_from_landmarks(points: Landmarks) -> Box:
    """A dlib-like face box around the landmarks (used to check and follow a tracked face)."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return Box(round(float(x0)), round(float(y0)), round(float(x1)), round(float(y1)))
