"""Liveness on landmark sequences tracked from real video (LivePortrait d18 and d3).

What the clips contain (checked by eye; see tests/data/faces/LICENSES.md):
d18: frontal, blinks around frames 94-98 and 185-189, yawns, no head turn.
d3: turns to her right (frames ~6-28), squint-blink (~47-52), turns to her left (~138-186 and
~246-286), right again (~300-324).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from vbank.identity.liveness import (
    BlinkDetector,
    Challenge,
    ChallengeSession,
    LivenessConfig,
    LivenessMonitor,
    Observation,
    PassiveConfig,
    PassiveLiveness,
    eye_aspect_ratio,
    head_yaw,
)

SEED_RIGHT_BLINK_LEFT = 19  # random.Random(19) draws (turn_right, blink, turn_left): d3's order


def run(challenge: Challenge, observations: list[Observation]) -> ChallengeSession:
    session = ChallengeSession(challenge)
    for obs in observations:
        session.feed(obs)
    return session


def test_blinks_found_in_d18(d18: Any) -> None:
    detector = BlinkDetector()
    blink_frames = [
        i
        for i, t, r in zip(d18.indices, d18.times, d18.reports, strict=True)
        if r.landmarks is not None and detector.feed(t, eye_aspect_ratio(r.landmarks))
    ]
    # A blink completes when the eyes reopen: just after frames 94-98 and 185-189.
    assert len(blink_frames) == 2
    assert 96 <= blink_frames[0] <= 106
    assert 186 <= blink_frames[1] <= 196


def test_held_eye_closure_is_not_a_blink() -> None:
    detector = BlinkDetector()
    ears = [0.3] * 10 + [0.1] * 15 + [0.3] * 5  # eyes shut for 1 s at 15 fps
    assert not any(detector.feed(i / 15, e) for i, e in enumerate(ears))
    ears = [0.3] * 10 + [0.1] * 2 + [0.3] * 5
    detector = BlinkDetector()
    assert sum(detector.feed(i / 15, e) for i, e in enumerate(ears)) == 1


def test_turn_directions_in_d3(d3: Any) -> None:
    """d3 turns to her right first (yaw < 0 by our convention), later to her left (> 0)."""
    yaw = {
        i: head_yaw(r.landmarks, (640, 480))
        for i, r in zip(d3.indices, d3.reports, strict=True)
        if r.landmarks is not None
    }
    frontal = float(np.median([yaw[i] for i in (0, 2, 4, 32, 34)]))
    right = min(yaw[i] - frontal for i in range(10, 28, 2))
    left = max(yaw[i] - frontal for i in range(140, 186, 2))
    assert right < -7.5
    assert left > 7.5
    # d18 never turns: its yaw stays within the turn threshold of its median.
    # (checked in test_no_turn_in_d18_times_out)


def test_mirrored_frames_flip_the_sign(d3: Any) -> None:
    points = d3.reports[9].landmarks  # frame 18: turned to her right
    assert points is not None
    raw = head_yaw(points, (640, 480))
    assert head_yaw(points, (640, 480), mirrored=True) == pytest.approx(-raw)


def test_challenge_in_the_clips_order_passes(d3: Any) -> None:
    challenge = Challenge.random(random.Random(SEED_RIGHT_BLINK_LEFT), n_steps=3, time_limit=15)
    assert challenge.steps == ("turn_right", "blink", "turn_left")
    monitor = LivenessMonitor(challenge)
    progress = []
    for obs in d3.observations():
        monitor.feed(obs)
        progress.append(monitor.session.progress)
    result = monitor.result()
    assert result.passed, result.reasons
    assert result.challenge_status == "passed"
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert monitor.session.current_step is None


def test_a_quick_challenge_keeps_collecting_until_enough_frames(d3: Any) -> None:
    """A busy server analyses few frames a second: the steps may all be done before the passive
    checks have enough pictures, and the customer must not be refused for that."""
    challenge = Challenge.random(random.Random(SEED_RIGHT_BLINK_LEFT), n_steps=3, time_limit=15)
    observations = [o for o in d3.observations() if o.landmarks is not None]
    probe = LivenessMonitor(challenge)
    done = next(i for i, o in enumerate(observations) if probe.feed(o) == "passed")
    assert done + 6 < len(observations)
    passive = PassiveConfig(min_frames=done + 6, max_extra_s=2.0)

    monitor = LivenessMonitor(challenge, passive=passive)
    for obs in observations[: done + 1]:
        monitor.feed(obs)
    passed_at = observations[done].t
    assert monitor.session.status == "passed"
    assert monitor.collecting(passed_at)
    assert monitor.result().reasons == ("insufficient_frames",)
    for obs in observations[done + 1 : done + 6]:
        assert monitor.collecting(obs.t)
        monitor.feed(obs)
    assert not monitor.collecting(observations[done + 5].t)
    assert monitor.result().passed, monitor.result().reasons

    # ...but not for ever: without faces it gives up max_extra_s after the challenge passed
    starved = LivenessMonitor(challenge, passive=passive)
    for obs in observations[: done + 1]:
        starved.feed(obs)
    assert starved.collecting(passed_at + 1.9)
    assert not starved.collecting(passed_at + 2.0)
    assert starved.result().reasons == ("insufficient_frames",)


def test_a_failed_challenge_collects_no_more(d3: Any) -> None:
    monitor = LivenessMonitor(
        Challenge(("turn_left", "blink"), seed=None, time_limit=15),
        passive=PassiveConfig(min_frames=10_000),
    )
    for obs in d3.observations():
        monitor.feed(obs)
    assert monitor.session.status == "failed"
    assert not monitor.collecting(d3.observations()[-1].t)


def test_turn_in_the_wrong_direction_fails(d3: Any) -> None:
    session = run(Challenge(("turn_left", "blink"), seed=None, time_limit=15), d3.observations())
    assert session.status == "failed"
    assert session.completed == 0
    assert any(r.startswith("wrong_direction") for r in session.reasons)


def test_no_turn_in_d18_times_out(d18: Any) -> None:
    session = run(Challenge(("turn_left",), seed=None, time_limit=5.0), d18.observations())
    assert session.status == "timeout"
    assert session.progress == 0.0
    assert abs(session.yaw_min) < 7.5 and abs(session.yaw_max) < 7.5


def test_blink_step_passes_on_d18(d18: Any) -> None:
    session = run(Challenge(("blink",), seed=None, time_limit=5.0), d18.observations())
    assert session.status == "passed"


def test_timeout_without_any_face() -> None:
    session = ChallengeSession(Challenge(("blink",), seed=None, time_limit=3.0))
    for i in range(10):
        session.feed(Observation(i * 0.5, None, (640, 480)))
    assert session.status in ("timeout", "failed")


def test_still_photo_streamed_as_video_fails_passive_checks(d18: Any) -> None:
    """One frame of d18 repeated for 4 s at 15 fps: frozen pixels, landmarks do not move."""
    from vbank.identity.quality import FaceTracker

    tracker = FaceTracker()
    still = d18.frames[10]
    monitor = LivenessMonitor(Challenge(("blink",), seed=None, time_limit=3.0))
    for i in range(60):
        report = tracker.process(still)
        monitor.feed(Observation(i / 15, report.landmarks, (640, 480), report.face_motion))
    result = monitor.result()
    assert not result.passed
    assert "static_video" in result.reasons
    assert "no_motion" in result.reasons
    assert result.challenge_status == "timeout"


def test_real_clips_pass_passive_checks(d18: Any, d3: Any) -> None:
    for clip in (d18, d3):
        passive = PassiveLiveness()
        for obs in clip.observations():
            passive.feed(obs)
        assert passive.reasons() == [], (clip.name, passive.metrics())


def test_rigidly_moved_landmarks_are_flagged(d18: Any) -> None:
    """A photo waved in front of the camera: landmarks move, but only as a rigid whole."""
    base = d18.reports[10].landmarks
    assert base is not None
    passive = PassiveLiveness()
    for i in range(45):
        angle = np.radians(4 * np.sin(i / 5))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = (base - base.mean(0)) @ rot.T * (1 + 0.05 * np.sin(i / 7)) + base.mean(0) + i
        passive.feed(Observation(i / 15, points, (640, 480), face_motion=3.0))
    assert passive.reasons() == ["rigid_face"]


def test_challenge_draw() -> None:
    a = Challenge.random(random.Random(1))
    assert a == Challenge.random(random.Random(1))
    assert sorted(a.steps) == ["blink", "turn_left", "turn_right"]
    drawn = Challenge.random(n_steps=2)  # no RNG given: a fresh 64-bit seed from secrets
    assert drawn.seed is not None and len(set(drawn.steps)) == 2
    long = Challenge.random(random.Random(1), n_steps=6)
    assert all(a != b for a, b in zip(long.steps, long.steps[1:], strict=False))
    assert Challenge.random(seed=drawn.seed, n_steps=2).steps == drawn.steps
    with pytest.raises(ValueError):
        Challenge.random(n_steps=7)


def test_config_is_respected(d18: Any) -> None:
    strict = LivenessConfig(blink_close_ratio=0.2)  # no real blink goes this low
    session = ChallengeSession(Challenge(("blink",), seed=None, time_limit=5.0), strict)
    for obs in d18.observations():
        session.feed(obs)
    assert session.status == "timeout"
