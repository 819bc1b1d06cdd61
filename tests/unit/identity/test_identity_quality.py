"""Quality gates on real 640×480 frames (LivePortrait d18), degraded in controlled ways."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from vbank.identity.quality import (
    GUIDANCE_ORDER,
    FaceTracker,
    QualityReport,
    fit_frame,
    track_frame,
)


def gates(frame: np.ndarray) -> QualityReport:
    return FaceTracker().process(frame)


def on_card(image: np.ndarray, scale: float) -> np.ndarray:
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    card = np.full((480, 640, 3), 120, np.uint8)
    card[100 : 100 + small.shape[0], 200 : 200 + small.shape[1]] = small
    return card


def test_good_frame_passes(d18_frame: np.ndarray) -> None:
    report = gates(d18_frame)
    assert report.ok, report.guidance
    assert report.n_faces == 1
    assert report.landmarks is not None and report.landmarks.shape == (68, 2)
    assert report.interocular_px > 80


def test_dark_frame_asks_for_more_light(d18_frame: np.ndarray) -> None:
    dark = (d18_frame.astype(np.float32) * 0.25).astype(np.uint8)
    report = gates(dark)
    assert report.guidance == ("more_light",)  # still sharp: sharpness is contrast-normalised
    assert report.brightness < 40


def test_overexposed_frame_asks_for_less_light(d18_frame: np.ndarray) -> None:
    bright = np.clip(d18_frame.astype(np.float32) * 2.2, 0, 255).astype(np.uint8)
    assert "less_light" in gates(bright).guidance


def test_blurred_frame_asks_to_hold_still(d18_frame: np.ndarray) -> None:
    blurred = cv2.GaussianBlur(d18_frame, (0, 0), 3)
    report = gates(blurred)
    assert report.guidance == ("hold_still",)
    assert report.sharpness < gates(d18_frame).sharpness / 3


def test_small_face_asks_to_move_closer(d18_frame: np.ndarray) -> None:
    face = d18_frame[:, 80:560]  # the 480×480 clip inside the letterboxed frame
    report = gates(on_card(face, 0.42))
    assert report.n_faces == 1
    assert report.guidance == ("move_closer",)


def test_second_person_gets_only_you(d18_frame: np.ndarray) -> None:
    face = cv2.resize(d18_frame[:, 80:560], (320, 320), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 120, np.uint8)
    frame[80:400, :320] = face
    frame[80:400, 320:] = face[:, ::-1]
    report = gates(frame)
    assert report.n_faces == 2
    assert report.guidance[0] == "only_you"


@pytest.mark.parametrize(
    ("level", "expected"), [(120, ("no_face",)), (20, ("no_face", "more_light"))]
)
def test_empty_frame(level: int, expected: tuple[str, ...]) -> None:
    report = gates(np.full((480, 640, 3), level, np.uint8))
    assert report.guidance == expected
    assert report.landmarks is None


def test_guidance_is_ordered_by_priority(d18_frame: np.ndarray) -> None:
    dark_blurred_small = on_card(
        cv2.GaussianBlur((d18_frame * 0.3).astype(np.uint8), (0, 0), 3)[:, 80:560], 0.42
    )
    report = gates(dark_blurred_small)
    order = [GUIDANCE_ORDER.index(g) for g in report.guidance]
    assert order == sorted(order)


def test_tracker_follows_the_face_in_a_window(d18: Any) -> None:
    """After the first full scan, frames are tracked in a window around the last face."""
    kinds = [r.detection for r in d18.reports]
    assert kinds[0] == "full"
    assert kinds.count("roi") > 0.8 * len(kinds)
    assert all(r.n_faces == 1 for r in d18.reports)
    # The windowed detection finds the same face as a full scan of the same frame.
    for i in (5, 50, 100):
        tracked = d18.reports[i].box
        full = gates(d18.frames[i]).box
        assert tracked is not None and full is not None
        centre_shift = abs((tracked.left + tracked.right) - (full.left + full.right)) / 2
        assert centre_shift < 0.15 * full.width
        assert 0.7 < tracked.width / full.width < 1.4


def test_face_motion_is_zero_for_a_repeated_frame(d18_frame: np.ndarray) -> None:
    tracker = FaceTracker()
    tracker.process(d18_frame)
    assert tracker.process(d18_frame).face_motion == 0.0


def test_track_frame_round_trips_state(d18_frame: np.ndarray) -> None:
    tracker, report = track_frame(FaceTracker(), d18_frame)
    assert tracker.frame_index == 1 and tracker.last_box == report.box


def test_fit_frame_shrinks_hd_frames() -> None:
    hd = np.zeros((720, 1280, 3), np.uint8)
    assert fit_frame(hd).shape == (360, 640, 3)
    small = np.zeros((240, 320, 3), np.uint8)
    assert fit_frame(small) is small
