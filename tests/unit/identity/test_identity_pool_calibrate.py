"""The process pool, the calibration maths and CLI, and the benchmark entry point."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from vbank.identity import calibrate
from vbank.identity.liveness import eye_aspect_ratio
from vbank.identity.pool import FacePool, default_workers
from vbank.identity.quality import FaceTracker, track_frame

FACES = Path(__file__).resolve().parents[2] / "data" / "faces"
KIT = "photos/ageitgey__face_recognition/examples/knn_examples/train/kit_harington"
ROSE = "photos/ageitgey__face_recognition/examples/knn_examples/train/rose_leslie"


async def test_pool_runs_face_work_in_another_process(d18_frame: np.ndarray) -> None:
    async with FacePool(max_workers=1) as pool:
        pids = await pool.warm_up()
        assert pids and os.getpid() not in pids
        tracker, report = await pool.run(track_frame, FaceTracker(), d18_frame)
        assert report.ok and tracker.frame_index == 1
        assert report.landmarks is not None
        ear = await pool.run(eye_aspect_ratio, report.landmarks)
        assert 0.15 < ear < 0.5


def test_default_workers_leaves_a_core() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert default_workers() == max(1, cpus - 1)


def test_threshold_at_far_takes_the_largest_safe_threshold() -> None:
    genuine = np.array([0.2, 0.3, 0.4, 0.55, 0.7])
    impostor = np.linspace(0.5, 1.5, 1000)  # smallest impostor distance 0.5
    at = calibrate.threshold_at_far(genuine, impostor, 1e-3)  # one impostor accept allowed
    assert at["impostor_accepts"] == 1
    assert at["threshold"] == pytest.approx(math.floor(impostor[1] * 1000 - 1e-6) / 1000)
    assert at["tar"] == pytest.approx(3 / 5)
    zero = calibrate.threshold_at_far(genuine, impostor, 1e-4)
    assert zero["impostor_accepts"] == 0 and zero["threshold"] < 0.5


def test_pairs_from_identities(tmp_path: Path) -> None:
    ids = tmp_path / "ids.csv"
    ids.write_text(
        "path,person,faces_in_image,note\na.jpg,x,1,\nb.jpg,x,1,\nc.jpg,y,1,\ng.jpg,z,2,group\n"
    )
    assert calibrate.pairs_from_identities(ids) == [
        ("a.jpg", "b.jpg", True),
        ("a.jpg", "c.jpg", False),
        ("b.jpg", "c.jpg", False),
    ]


def test_calibrate_cli_on_three_photos(tmp_path: Path) -> None:
    pairs = tmp_path / "photos" / "pairs.csv"
    pairs.parent.mkdir()
    rows = [
        (f"{KIT}/john1.jpeg", f"{KIT}/john2.jpeg", "1"),
        (f"{KIT}/john1.jpeg", f"{ROSE}/img1.jpg", "0"),
        (f"{KIT}/john2.jpeg", f"{ROSE}/img1.jpg", "0"),
    ]
    with pairs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path_a", "path_b", "same_person"])
        writer.writerows([(str(FACES / a), str(FACES / b), s) for a, b, s in rows])
    out = tmp_path / "calibration.json"
    cache = tmp_path / "cache.npz"
    args = ["--pairs", str(pairs), "--out", str(out), "--jitters", "0", "--cache", str(cache)]
    assert calibrate.main(args) == 0
    report = json.loads(out.read_text())
    ours = report["pairs_csv"]["ours"]
    assert (ours["genuine_pairs"], ours["impostor_pairs"]) == (1, 2)
    assert report["chosen"]["threshold"] < ours["impostor_min"]
    assert report["chosen"]["far"] == 0.0 and report["chosen"]["frr"] == 0.0
    # A second run reads every encoding from the cache.
    mtime = cache.stat().st_mtime_ns
    assert calibrate.main(args) == 0
    assert cache.stat().st_mtime_ns == mtime
    assert json.loads(out.read_text())["chosen"] == report["chosen"]
