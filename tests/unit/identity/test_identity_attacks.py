"""APCER of replayed recordings and of a still photo against random challenges.

d3 turns right, blinks and turns left (one fixed order); d18 only blinks. A looped replay
of d3 can still pass challenges whose order its loop happens to contain, which is why the
rates are measured and reported (docs/identity.md), not assumed."""

from __future__ import annotations

import itertools
from typing import Any

from vbank.identity.attacks import acceptance_rate, looped
from vbank.identity.liveness import Observation
from vbank.identity.quality import FaceTracker


def test_looping_extends_the_recording() -> None:
    obs = [Observation(t / 10, None, (640, 480)) for t in range(10)]
    out = looped(obs, 3.0)
    assert out[-1].t <= 3.0 and len(out) >= 29
    assert all(b.t > a.t for a, b in itertools.pairwise(out))


def test_replayed_recordings_fail_most_random_challenges(d3: Any, d18: Any) -> None:
    apcer_d3 = acceptance_rate(d3.observations(), attempts=60)
    apcer_d18 = acceptance_rate(d18.observations(), attempts=60)
    print(f"APCER replay: d3={apcer_d3:.3f} d18={apcer_d18:.3f}")
    assert apcer_d18 == 0.0  # no head turns in it: every 4-step challenge needs one
    assert apcer_d3 <= 0.25


def test_a_still_photo_never_passes(d18: Any) -> None:
    tracker = FaceTracker()
    still = d18.frames[10]
    obs = []
    for i in range(45):
        report = tracker.process(still)
        obs.append(Observation(i / 15, report.landmarks, (640, 480), report.face_motion))
    assert acceptance_rate(obs, attempts=30) == 0.0
