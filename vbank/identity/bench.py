"""Face pipeline benchmark: tracking/encoding cost per frame and accuracy on labelled photos.

``run(dataset_dir)`` is what ``vbank bench face --json`` prints. Times are CPU time of this
process (``time.process_time``), which is what one pool worker spends per frame; wall time on a
loaded machine is higher. Without a dataset the project's own test faces are used
(``tests/data/faces``: photos listed in ``photos/identities.csv`` and a LivePortrait clip).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from vbank.identity import calibrate, matching
from vbank.identity._models import RGBImage, load_models
from vbank.identity.quality import FaceTracker, fit_frame

logger = logging.getLogger(__name__)

TEST_FACES = Path(__file__).resolve().parents[2] / "tests" / "data" / "faces"
DEFAULT_CLIP = "video/KwaiVGI__LivePortrait/assets/examples/driving/d3.mp4"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def letterbox(frame: RGBImage, size: tuple[int, int] = (640, 480)) -> RGBImage:
    """Fit ``frame`` into a black ``size`` canvas, as a 640×480 webcam frame would be."""
    small = fit_frame(frame, size)
    h, w = small.shape[:2]
    canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    y0, x0 = (size[1] - h) // 2, (size[0] - w) // 2
    canvas[y0 : y0 + h, x0 : x0 + w] = small
    return canvas


def video_frames(path: Path, limit: int, step: int = 2) -> Iterator[RGBImage]:
    """Every ``step``-th frame (30 → 15 fps, the analysis rate) as 640×480 RGB."""
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i // step >= limit:
                break
            if i % step == 0:
                yield letterbox(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))


def _labelled_images(dataset_dir: Path | None) -> list[tuple[Path, str]]:
    if dataset_dir is None:
        ids = TEST_FACES / "photos" / "identities.csv"
        with ids.open(newline="") as f:
            return [
                (TEST_FACES / r["path"], r["person"])
                for r in csv.DictReader(f)
                if r["faces_in_image"] == "1"
            ]
    return [
        (p, person.name)
        for person in sorted(d for d in dataset_dir.iterdir() if d.is_dir())
        for p in sorted(person.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]


def _ms(seconds: list[float], q: float = 50.0) -> float:
    return round(float(np.percentile(np.array(seconds) * 1000.0, q)), 2)


def run(
    dataset_dir: Path | None = None, *, frames: int = 150, jitters: int | None = None
) -> dict[str, Any]:
    """Run the benchmark; see the module docstring. Returns a JSON-ready dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition
    load_models()
    jitters = matching.REFERENCE_JITTERS if jitters is None else jitters

    clips = sorted(dataset_dir.rglob("*.mp4")) if dataset_dir else []
    clip = clips[0] if clips else TEST_FACES / DEFAULT_CLIP
    tracker = FaceTracker()
    track_s: list[float] = []
    good: list[tuple[RGBImage, Any]] = []
    for frame in video_frames(clip, frames):
        t0 = time.process_time()
        report = tracker.process(frame)
        track_s.append(time.process_time() - t0)
        if report.ok and report.box is not None and len(good) < 20 and len(track_s) % 5 == 0:
            good.append((frame, report))

    encode_s: list[float] = []
    raw_s: list[float] = []
    live = []
    for frame, report in good:
        t0 = time.process_time()
        live.append(matching.encode_live(frame, report.box, report.landmarks))
        encode_s.append(time.process_time() - t0)
        t0 = time.process_time()
        face_recognition.face_encodings(frame)
        raw_s.append(time.process_time() - t0)

    labelled = _labelled_images(dataset_dir)
    enc = {str(p): calibrate.encode_image(p, jitters, True) for p, _ in labelled}
    pairs = [(str(a), str(b), pa == pb) for (a, pa), (b, pb) in itertools.combinations(labelled, 2)]
    cal = matching.load_calibration()
    g, i, _ = calibrate.pair_distances(pairs, enc, "ours")
    dg, di, _ = calibrate.pair_distances(pairs, enc, "default")

    decision_s: list[float] = []
    if live and g.size:
        ref = matching.ReferenceEncoding(np.array([live[0]]), 0, False)
        for _ in range(20):
            t0 = time.perf_counter()
            matching.decide(ref, live[1:6] or live, cal)
            decision_s.append(time.perf_counter() - t0)

    at_1e2 = calibrate.threshold_at_far(g, i, 1e-2) if g.size and i.size else {}
    at_1e3 = calibrate.threshold_at_far(g, i, 1e-3) if g.size and i.size else {}
    default = calibrate.rates_at(dg, di, calibrate.DEFAULT_TOLERANCE) if dg.size else {}
    ours = calibrate.rates_at(g, i, cal.threshold) if g.size else {}
    return {
        "track_ms_median": _ms(track_s),
        "track_ms_p95": _ms(track_s, 95),
        "encode_ms_median": _ms(encode_s) if encode_s else None,
        "raw_encode_ms_median": _ms(raw_s) if raw_s else None,
        "decision_ms": round(statistics.median(decision_s) * 1000, 3) if decision_s else None,
        "pairs_genuine": int(g.size),
        "pairs_impostor": int(i.size),
        "tar_at_far_1e-2": at_1e2.get("tar"),
        "tar_at_far_1e-3": at_1e3.get("tar"),
        "threshold": cal.threshold,
        "tar_at_threshold": ours.get("tar"),
        "far_at_threshold": ours.get("far"),
        "default_tar": default.get("tar"),
        "default_far": default.get("far"),
        "frames": len(track_s),
        "clip": clip.name,
        "images": len(labelled),
        "opencv_threads": cv2.getNumThreads(),
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    arg = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    print(json.dumps(run(arg), indent=2))
