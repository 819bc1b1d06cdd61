"""Per-frame quality gates for the live camera, with a cheap face tracker.

Only frames that pass the gates are encoded and matched: a dark, blurred or distant face gives a
descriptor that drifts towards the impostor range, so rejecting it early keeps false refusals down
and tells the customer what to change (the ``guidance`` codes, translated by the UI).

Detection is the expensive step (dlib HOG on a full 640×480 frame costs ~35 ms), so the tracker
re-detects only in a window around the last face, scaled so the face is about 100 px wide
(~5 ms), and scans the whole frame every ``full_every`` frames (to notice a second person) or when
the face is lost.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from vbank.identity import _models
from vbank.identity._models import Box, Landmarks, RGBImage

logger = logging.getLogger(__name__)

Guidance = Literal["no_face", "only_you", "move_closer", "more_light", "less_light", "hold_still"]
GUIDANCE_ORDER: tuple[Guidance, ...] = (
    "no_face",
    "only_you",
    "move_closer",
    "more_light",
    "less_light",
    "hold_still",
)
"""Most important first: the UI shows the first code."""

FRAME_SIZE = (640, 480)
"""The frame size the thresholds are tuned for; larger frames are shrunk by :func:`fit_frame`."""


@dataclass(frozen=True, slots=True)
class QualityThresholds:
    """Gate thresholds, for 640×480 frames (see docs/identity.md for how they were chosen)."""

    min_interocular_px: float = 50.0
    """Eye-centre distance; 50 px ≈ a 110 px face box (a face about 1 m from a laptop webcam).
    Below it dlib's 150 px encoder chip is mostly interpolated. HOG finds faces down to ~80 px
    boxes, so faces between 80 and 110 px get ``move_closer`` rather than ``no_face``."""
    min_sharpness: float = 5.0
    """:func:`sharpness` of the face crop resized to 96×96 grey. Sharp frames of the test clips
    score 8-45; a 3 px Gaussian blur of the 640×480 frame brings them under 4.5."""
    min_brightness: float = 60.0
    """Mean luma (0-255) of the face crop."""
    max_brightness: float = 215.0
    max_jump: float = 0.25
    """Face centre moving more than this fraction of the face width between frames: motion blur."""
    several_faces_ratio: float = 0.5
    """A second face at least this fraction of the main face's width counts as another person."""
    dark_frame_luma: float = 50.0
    """Without a face, a frame darker than this on average also gets ``more_light``."""


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The gates' verdict on one frame; ``landmarks`` are reused for encoding and liveness."""

    ok: bool
    guidance: tuple[Guidance, ...]
    n_faces: int
    box: Box | None = None
    landmarks: Landmarks | None = None
    interocular_px: float = 0.0
    sharpness: float = 0.0
    brightness: float = 0.0
    detection: Literal["full", "roi", "none"] = "none"
    face_motion: float | None = None
    """Mean absolute grey-level change in the face box since the previous frame (None on the
    first frame); near zero for a frozen picture. Measured on a 1/4-size grey copy of the frame,
    in the *same* box for both frames, so detector jitter does not count as motion."""


def fit_frame(frame: RGBImage, size: tuple[int, int] = FRAME_SIZE) -> RGBImage:
    """Shrink a frame to fit in ``size`` (keeping aspect); smaller frames are returned as is."""
    h, w = frame.shape[:2]
    scale = min(size[0] / w, size[1] / h)
    if scale >= 1.0:
        return frame
    resized = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    out: RGBImage = np.ascontiguousarray(resized)
    return out


def interocular(points: Landmarks) -> float:
    """Distance between the eye centres (mean of landmarks 36-41 and 42-47), in pixels."""
    return float(np.linalg.norm(points[36:42].mean(axis=0) - points[42:48].mean(axis=0)))


def face_crop_gray(frame: RGBImage, box: Box, size: int = 96) -> np.ndarray:
    """The face box as a ``size``×``size`` grey crop (a fixed size makes sharpness comparable)."""
    h, w = frame.shape[:2]
    x0, y0 = max(0, box.left), max(0, box.top)
    x1, y1 = min(w, box.right), min(h, box.bottom)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((size, size), dtype=np.uint8)
    crop = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    interpolation = cv2.INTER_AREA if crop.shape[1] > size else cv2.INTER_LINEAR
    resized: np.ndarray = cv2.resize(crop, (size, size), interpolation=interpolation)
    return resized


def sharpness(gray_crop: np.ndarray) -> float:
    """Variance of the Laplacian relative to the crop's contrast (×100): low for blur.

    Dividing by the grey-level variance keeps a dark but sharp face from reading as blurred
    (the raw Laplacian variance falls with the square of the contrast).
    """
    lap = float(cv2.Laplacian(gray_crop, cv2.CV_64F).var())
    contrast = float(gray_crop.var())
    return 100.0 * lap / max(contrast, 1.0)


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.right, b.right) - max(a.left, b.left))
    iy = max(0, min(a.bottom, b.bottom) - max(a.top, b.top))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FaceTracker:
    """Per-call-session state of the face tracker; plain data, so it can cross to a pool worker.

    Feed frames in order with :meth:`process`. ``full_every`` bounds how long a second person can
    stay unnoticed (15 frames = 1 s at 15 fps).
    """

    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    full_every: int = 15
    roi_face_px: int = 100
    roi_margin: float = 0.6
    frame_index: int = 0
    last_box: Box | None = None
    last_n_faces: int = 0
    prev_small: npt.NDArray[np.uint8] | None = None
    window: tuple[int, int, int, int, float] | None = None
    """The current detection window (x0, y0, x1, y1, scale)."""
    """Grey 1/4-size copy of the previous frame, for :attr:`QualityReport.face_motion`."""

    def _face_motion(self, frame: RGBImage, box: Box | None) -> float | None:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        small = np.asarray(
            cv2.resize(gray, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA),
            dtype=np.uint8,
        )
        prev, self.prev_small = self.prev_small, small
        if box is None or prev is None or prev.shape != small.shape:
            return None
        x0, y0 = max(0, box.left // 4), max(0, box.top // 4)
        x1, y1 = min(small.shape[1], box.right // 4), min(small.shape[0], box.bottom // 4)
        if x1 <= x0 or y1 <= y0:
            return None
        a = small[y0:y1, x0:x1].astype(np.int16)
        b = prev[y0:y1, x0:x1].astype(np.int16)
        return float(np.abs(a - b).mean())

    def _detect_full(self, frame: RGBImage) -> list[Box]:
        return _models.detect(frame, upsample=0)

    def _window_for(self, frame: RGBImage, prev: Box) -> tuple[int, int, int, int, float]:
        h, w = frame.shape[:2]
        margin = self.roi_margin * max(prev.width, prev.height)
        grid = 32
        x0 = max(0, int(prev.left - margin) // grid * grid)
        y0 = max(0, int(prev.top - margin) // grid * grid)
        x1 = min(w, -(-int(prev.right + margin) // grid) * grid)
        y1 = min(h, -(-int(prev.bottom + margin) // grid) * grid)
        scale = min(1.0, 2.0 ** (round(4 * math.log2(self.roi_face_px / max(1, prev.width))) / 4))
        return x0, y0, x1, y1, scale

    def _window_fits(self, frame: RGBImage, prev: Box) -> bool:
        if self.window is None:
            return False
        x0, y0, x1, y1, scale = self.window
        h, w = frame.shape[:2]
        room = 0.25 * prev.width
        inside = (
            (prev.left - x0 >= room or x0 == 0)
            and (prev.top - y0 >= room or y0 == 0)
            and (x1 - prev.right >= room or x1 == w)
            and (y1 - prev.bottom >= room or y1 == h)
        )
        ratio = prev.width * scale / self.roi_face_px
        size_ok = 0.8 <= ratio <= 1.25 or (scale == 1.0 and ratio <= 1.25)
        return inside and size_ok

    def _detect_roi(self, frame: RGBImage, prev: Box) -> Box | None:
        """Detect in a window around ``prev``, scaled so the face is ~``roi_face_px`` wide.

        The window is kept while the face stays well inside it at a similar size, and is snapped
        to a 32 px grid and quarter-octave scales when it moves: HOG boxes are quantised to the
        detector's cells, so a window that followed every box would make the box (and the
        landmarks) wander even on a frozen frame.
        """
        if not self._window_fits(frame, prev):
            self.window = self._window_for(frame, prev)
        assert self.window is not None
        x0, y0, x1, y1, scale = self.window
        if x1 - x0 < 40 or y1 - y0 < 40:
            return None
        roi = frame[y0:y1, x0:x1]
        if scale < 1.0:
            size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
            roi = np.asarray(cv2.resize(roi, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        boxes = _models.detect(np.ascontiguousarray(roi), upsample=0)
        if not boxes:
            self.window = None
            return None
        found = [b.scaled(1.0 / scale, x0, y0) for b in boxes]
        return max(found, key=lambda b: _iou(b, prev))

    def process(self, frame: RGBImage) -> QualityReport:
        """Detect/track the face in ``frame``, get its 68 landmarks and apply the gates."""
        th = self.thresholds
        index = self.frame_index
        self.frame_index += 1
        prev = self.last_box
        box: Box | None = None
        detection: Literal["full", "roi", "none"] = "none"
        n_faces = self.last_n_faces
        if prev is not None:
            box = self._detect_roi(frame, prev)
            if box is not None:
                detection = "roi"
        if box is None or index % self.full_every == 0:
            # A full scan: when the face was lost, and every ``full_every`` frames to count faces
            # (the tracked box is kept then, so the landmarks do not jump).
            boxes = self._detect_full(frame)
            if boxes:
                main = boxes[0]
                n_faces = 1 + sum(
                    1 for b in boxes[1:] if b.width >= th.several_faces_ratio * main.width
                )
                if box is None:
                    box, detection = main, "full"
            elif box is None:
                n_faces = 0
            else:
                n_faces = 1
        self.last_box = box
        self.last_n_faces = n_faces
        motion = self._face_motion(frame, box)

        if box is None:
            guidance: list[Guidance] = ["no_face"]
            luma = float(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).mean())
            if luma < th.dark_frame_luma:
                guidance.append("more_light")
            return QualityReport(False, tuple(guidance), 0, brightness=luma)

        points = _models.landmarks(frame, box)
        crop = face_crop_gray(frame, box)
        sharp = sharpness(crop)
        luma = float(crop.mean())
        eyes = interocular(points)
        codes: set[Guidance] = set()
        if n_faces > 1:
            codes.add("only_you")
        if eyes < th.min_interocular_px:
            codes.add("move_closer")
        if luma < th.min_brightness:
            codes.add("more_light")
        elif luma > th.max_brightness:
            codes.add("less_light")
        if sharp < th.min_sharpness:
            codes.add("hold_still")
        if prev is not None and detection == "roi":
            jump = np.hypot(
                (box.left + box.right - prev.left - prev.right) / 2,
                (box.top + box.bottom - prev.top - prev.bottom) / 2,
            )
            if jump > th.max_jump * prev.width:
                codes.add("hold_still")
        ordered = tuple(g for g in GUIDANCE_ORDER if g in codes)
        return QualityReport(
            ok=not ordered,
            guidance=ordered,
            n_faces=n_faces,
            box=box,
            landmarks=points,
            interocular_px=eyes,
            sharpness=sharp,
            brightness=luma,
            detection=detection,
            face_motion=motion,
        )


def track_frame(tracker: FaceTracker, frame: RGBImage) -> tuple[FaceTracker, QualityReport]:
    """Pool-friendly wrapper: process one frame and hand the updated tracker state back."""
    report = tracker.process(frame)
    return tracker, report
