"""Fixtures for the identity tests: real faces from tests/data/faces, expensive work cached."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vbank.identity.bench import letterbox
from vbank.identity.liveness import Observation
from vbank.identity.quality import FaceTracker, QualityReport

FACES = Path(__file__).resolve().parents[2] / "data" / "faces"
PHOTOS = FACES / "photos"
DRIVING = FACES / "video" / "KwaiVGI__LivePortrait" / "assets" / "examples" / "driving"
DERIVED = FACES / "derived"


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="session")
def read_rgb() -> Callable[[Path], np.ndarray]:
    """Read an image file as RGB uint8."""
    return _read_rgb


@dataclass
class TrackedClip:
    """A clip run through the tracker at 15 fps (every 2nd frame of the 30 fps original)."""

    name: str
    frames: list[np.ndarray]
    indices: list[int]
    times: list[float]
    reports: list[QualityReport]

    def observations(self) -> list[Observation]:
        return [
            Observation(t, r.landmarks, (f.shape[1], f.shape[0]), r.face_motion)
            for t, r, f in zip(self.times, self.reports, self.frames, strict=True)
        ]


def track_clip(path: Path, step: int = 2) -> TrackedClip:
    tracker = FaceTracker()
    frames, indices, times, reports = [], [], [], []
    with av.open(str(path)) as container:
        fps = float(container.streams.video[0].average_rate)
        for i, frame in enumerate(container.decode(video=0)):
            if i % step:
                continue
            rgb = letterbox(frame.to_ndarray(format="rgb24"))
            frames.append(rgb)
            indices.append(i)
            times.append(i / fps)
            reports.append(tracker.process(rgb))
    return TrackedClip(path.name, frames, indices, times, reports)


@pytest.fixture(scope="session")
def d18() -> TrackedClip:
    """LivePortrait d18: frontal, blinks at frames ~94-98 and ~185-189, no head turn."""
    return track_clip(DRIVING / "d18.mp4")


@pytest.fixture(scope="session")
def d3() -> TrackedClip:
    """LivePortrait d3: turns right (~6-28), blinks (~47-52), turns left (~138-186)."""
    return track_clip(DRIVING / "d3.mp4")


@pytest.fixture(scope="session")
def d18_frame(d18: TrackedClip) -> np.ndarray:
    """A good 640×480 frame of d18 (frame 20, frontal, eyes open)."""
    return d18.frames[10]
