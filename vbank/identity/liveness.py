"""Liveness: is a live person in front of the camera, rather than a photo or a replayed video?

Two layers, both fed the 68 landmarks the quality tracker already computed (no extra detection):

* an **active challenge**: the customer is asked, in an order drawn at random per session, to
  blink, turn left and turn right. A replayed recording would have to contain the movements in
  the drawn order; a turn in the wrong direction fails the challenge outright.
* **passive checks** over the whole session: a frozen picture (face pixels identical from frame to
  frame) or a face whose shape never changes (a printed photo moved by hand keeps its landmarks
  in rigid formation) is refused whatever the challenge said.

Sign convention for head turns: ``yaw > 0`` means the customer turned their head to **their own
left**. Frames are the *raw* camera frames (not the mirrored selfie preview), in which a turn to
the customer's left moves the nose towards the right edge of the image. A client that sends
mirrored frames must set ``mirrored=True``.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

import cv2
import numpy as np
import numpy.typing as npt

from vbank.identity._models import Landmarks

logger = logging.getLogger(__name__)

Step = Literal["blink", "turn_left", "turn_right"]
STEPS: tuple[Step, ...] = ("blink", "turn_left", "turn_right")
MAX_STEPS: Final = 6
Status = Literal["running", "passed", "failed", "timeout"]

# A generic head in camera-aligned axes (x to the image's right, y down, z away from the camera),
# in arbitrary units (≈ 0.85 cm). Only points that do not move with expression are used: the
# mouth corners were tried and dropped, because a yawn then reads as a 13° turn (docs/identity.md).
_MODEL_POINTS: dict[int, tuple[float, float, float]] = {
    30: (0.0, -1.9, -5.42),  # nose tip
    27: (0.0, -5.6, -2.42),  # nose bridge (nasion)
    33: (0.0, -0.9, -3.92),  # below the nose
    31: (-2.0, -1.41, -3.27),  # nostril wings
    35: (2.0, -1.41, -3.27),
    36: (-5.31, -5.49, 0.0),  # eye corners: outer / inner, image-left eye first
    39: (-1.79, -5.39, -0.63),
    42: (1.79, -5.39, -0.63),
    45: (5.31, -5.49, 0.0),
    8: (0.0, 7.42, -0.12),  # chin
}
_FOCAL = 2.0
"""Focal length in frame widths. Chosen on the clips (docs/identity.md): it separated real turns
from expression-induced jitter better than 1.0; yaw is only compared to the person's own."""
_POSE_IDS = list(_MODEL_POINTS)
_POSE_MODEL = np.array([_MODEL_POINTS[i] for i in _POSE_IDS], dtype=np.float64)


def eye_aspect_ratio(points: Landmarks) -> float:
    """Mean eye aspect ratio of both eyes (Soukupová & Čech 2016): ~0.3 open, < 0.15 closed."""

    def one(eye: npt.NDArray[np.float64]) -> float:
        vertical = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
        horizontal = 2.0 * np.linalg.norm(eye[0] - eye[3])
        return float(vertical / horizontal) if horizontal > 0 else 0.0

    return (one(points[36:42]) + one(points[42:48])) / 2.0


def head_yaw(points: Landmarks, frame_size: tuple[int, int], mirrored: bool = False) -> float:
    """Head yaw in degrees from ``cv2.solvePnP``; > 0 when the customer turns to *their* left.

    With a generic head model the value is biased per face by a few degrees and compressed
    (a real 30° turn reads as 10-20°), so callers compare it against the person's own frontal
    yaw (see :class:`ChallengeSession`) with thresholds tuned on real clips.
    """
    w, h = frame_size
    f = _FOCAL * w
    camera = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)
    image_points = np.ascontiguousarray(points[_POSE_IDS], dtype=np.float64)
    ok, rvec, _tvec = cv2.solvePnP(
        _POSE_MODEL, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP
    )
    if not ok:
        return math.nan
    rotation, _ = cv2.Rodrigues(rvec)
    nose_dir = rotation @ np.array([0.0, 0.0, -1.0])  # where the face points, camera axes
    yaw = math.degrees(math.atan2(float(nose_dir[0]), float(-nose_dir[2])))
    return -yaw if mirrored else yaw


def frontalness(points: Landmarks) -> float:
    """Where the nose tip sits between the jaw ends (0.5 = frontal); used to pick neutral frames."""
    left, right = float(points[0, 0]), float(points[16, 0])
    if right - left <= 1e-6:
        return math.nan
    return (float(points[30, 0]) - left) / (right - left)


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    """Thresholds, tuned on the LivePortrait / SadTalker clips (docs/identity.md)."""

    blink_close_ratio: float = 0.6
    """Eyes count as closed below this fraction of the person's open-eye EAR."""
    blink_recover: float = 0.5
    """...and open again once the EAR is back this fraction of the way from its minimum to the
    open-eye EAR (eyes often stay narrower for a while after a blink)."""
    blink_max_closed_s: float = 0.5
    """Longer closures are not blinks (eyes shut, looking down)."""
    blink_max_closed_frames: int = 15
    open_ear_window_s: float = 3.0
    """The open-eye EAR is the 80th percentile of the EAR over this window."""
    min_history: int = 5
    """Frames with a face before blinks can be detected (to learn the open-eye EAR)."""
    turn_deg: float = 7.5
    """A turn is this far (yaw, degrees) from the person's frontal yaw."""
    return_deg: float = 4.0
    """Back to frontal: needed between two turns, so one held turn does not count twice."""
    turn_frames: int = 2
    """Consecutive frames beyond ``turn_deg`` needed to count a turn."""
    frontal_band: float = 0.08
    """Frames with ``|frontalness - 0.5|`` below this calibrate the frontal yaw."""
    baseline_frames: int = 3
    step_time_limit_s: float = 7.0
    """Each step must follow within this long after it is asked: a looped recording then
    passes only if its movements come in the drawn order at a human pace, not eventually."""
    max_face_lost_s: float = 3.0
    """The challenge fails if the face is gone this long."""
    fail_on_wrong_turn: bool = True
    mirrored: bool = False


@dataclass(frozen=True, slots=True)
class Observation:
    """One analysed frame: time stamp (seconds, monotonic) and the face's landmarks if any."""

    t: float
    landmarks: Landmarks | None
    frame_size: tuple[int, int]
    """(width, height) of the frame the landmarks refer to."""
    face_motion: float | None = None
    """Grey-level change in the face box since the previous frame
    (:attr:`~vbank.identity.quality.QualityReport.face_motion`)."""


class BlinkDetector:
    """Counts blinks from an EAR stream, relative to the person's own open-eye EAR."""

    def __init__(self, config: LivenessConfig | None = None) -> None:
        self.config = config or LivenessConfig()
        self._history: deque[tuple[float, float]] = deque()
        self._closed_since: float | None = None
        self._closed_frames = 0
        self._closed_min = 0.0
        self.blinks = 0
        self.last_blink_t: float | None = None

    def open_ear(self) -> float:
        """The person's open-eye EAR (80th percentile of the recent window)."""
        if not self._history:
            return math.nan
        return float(np.percentile([e for _, e in self._history], 80))

    def feed(self, t: float, ear: float) -> bool:
        """Feed one frame's EAR; returns True on the frame that completes a blink."""
        cfg = self.config
        baseline = self.open_ear()
        ready = len(self._history) >= cfg.min_history
        completed = False
        if ready and self._closed_since is None and ear < cfg.blink_close_ratio * baseline:
            self._closed_since = t
            self._closed_frames = 1
            self._closed_min = ear
        elif self._closed_since is not None:
            self._closed_min = min(self._closed_min, ear)
            recovered = ear >= cfg.blink_close_ratio * baseline and (
                ear - self._closed_min >= cfg.blink_recover * (baseline - self._closed_min)
            )
            if recovered:
                duration = t - self._closed_since
                if (
                    duration <= cfg.blink_max_closed_s
                    and self._closed_frames <= cfg.blink_max_closed_frames
                ):
                    self.blinks += 1
                    self.last_blink_t = t
                    completed = True
                self._closed_since = None
                self._closed_frames = 0
            else:
                self._closed_frames += 1
        # Closed-eye frames stay out of the open-eye estimate.
        if self._closed_since is None:
            self._history.append((t, ear))
            while self._history and self._history[0][0] < t - cfg.open_ear_window_s:
                self._history.popleft()
        return completed


@dataclass(frozen=True, slots=True)
class Challenge:
    """What the customer is asked to do, in order; ``seed`` is kept for the audit trail."""

    steps: tuple[Step, ...]
    seed: int | None
    time_limit: float = 20.0

    @classmethod
    def random(
        cls,
        rng: random.Random | None = None,
        *,
        seed: int | None = None,
        n_steps: int = 3,
        time_limit: float = 20.0,
    ) -> Challenge:
        """Draw ``n_steps`` steps in random order, never the same step twice in a row.

        Repeats are allowed beyond that, so four steps give 24 possible challenges rather
        than the 6 orders of three distinct steps: a recording that contains some of the
        movements passes far fewer of them (see vbank.identity.attacks).

        Pass ``rng`` (tests) or ``seed``; without either, a 64-bit seed is drawn from
        :mod:`secrets` so that the order cannot be predicted by a client.
        """
        if not 1 <= n_steps <= MAX_STEPS:
            raise ValueError(f"n_steps must be 1..{MAX_STEPS}")
        if rng is None:
            if seed is None:
                seed = secrets.randbits(64)
            rng = random.Random(seed)
        drawn: list[Step] = []
        for _ in range(n_steps):
            drawn.append(rng.choice([s for s in STEPS if not drawn or s != drawn[-1]]))
        steps = tuple(drawn)
        return cls(steps=steps, seed=seed, time_limit=time_limit)


@dataclass
class ChallengeSession:
    """Runs one :class:`Challenge` over a stream of observations."""

    challenge: Challenge
    config: LivenessConfig = field(default_factory=LivenessConfig)
    status: Status = "running"
    completed: int = 0
    reasons: list[str] = field(default_factory=list)
    started_at: float | None = None
    passed_at: float | None = None
    """When the last step was done (None until the challenge passes)."""
    frontal_yaw: float | None = None
    blinks: int = 0
    yaw_min: float = 0.0
    """Most extreme relative yaw seen to the customer's right (negative)."""
    yaw_max: float = 0.0
    """Most extreme relative yaw seen to the customer's left (positive)."""
    _blink: BlinkDetector = field(init=False)
    _frontal: list[float] = field(default_factory=list)
    _streak: int = 0
    _streak_dir: int = 0
    _armed: bool = True
    _last_face_t: float | None = None
    _step_started: float | None = None

    def __post_init__(self) -> None:
        self._blink = BlinkDetector(self.config)

    @property
    def current_step(self) -> Step | None:
        """The step the customer should do now (None once finished)."""
        if self.status != "running" or self.completed >= len(self.challenge.steps):
            return None
        return self.challenge.steps[self.completed]

    @property
    def progress(self) -> float:
        """Fraction of steps done, 0.0-1.0 (for the UI's progress bar)."""
        return self.completed / len(self.challenge.steps)

    def _finish(self, status: Status, reason: str | None = None) -> None:
        self.status = status
        if reason:
            self.reasons.append(reason)
        logger.info("challenge %s %s after %d steps", status, reason or "", self.completed)

    def _advance(self, t: float) -> None:
        self.completed += 1
        self._step_started = t
        if self.completed >= len(self.challenge.steps):
            self.passed_at = t
            self._finish("passed")

    def check_time(self, t: float) -> Status:
        """Time out the challenge if its limit has passed (call even when no frame arrives)."""
        if self.status == "running" and self.started_at is not None:
            if t - self.started_at > self.challenge.time_limit:
                self._finish("timeout", f"timeout: no {self.current_step} within the time limit")
            elif t - (self._step_started or self.started_at) > self.config.step_time_limit_s:
                self._finish("timeout", f"timeout: no {self.current_step} within the step limit")
            elif (
                self._last_face_t is not None
                and t - self._last_face_t > self.config.max_face_lost_s
            ):
                self._finish("failed", "face_lost")
        return self.status

    def feed(self, obs: Observation) -> Status:
        """Feed one observation (in time order); returns the status after it."""
        if self.status != "running":
            return self.status
        if self.started_at is None:
            self.started_at = obs.t
            self._step_started = obs.t
            self._last_face_t = obs.t
        if self.check_time(obs.t) != "running":
            return self.status
        if obs.landmarks is None:
            return self.status
        self._last_face_t = obs.t
        cfg = self.config
        points = obs.landmarks

        if self._blink.feed(obs.t, eye_aspect_ratio(points)):
            self.blinks += 1
            if self.current_step == "blink":
                self._advance(obs.t)
                return self.status

        yaw = head_yaw(points, obs.frame_size, mirrored=cfg.mirrored)
        if math.isnan(yaw):
            return self.status
        if self.frontal_yaw is None:
            f = frontalness(points)
            if not math.isnan(f) and abs(f - 0.5) <= cfg.frontal_band:
                self._frontal.append(yaw)
                if len(self._frontal) >= cfg.baseline_frames:
                    self.frontal_yaw = float(np.median(self._frontal))
            return self.status

        rel = yaw - self.frontal_yaw
        self.yaw_min = min(self.yaw_min, rel)
        self.yaw_max = max(self.yaw_max, rel)
        if abs(rel) < cfg.return_deg:
            self._armed = True
        direction = 1 if rel >= cfg.turn_deg else -1 if rel <= -cfg.turn_deg else 0
        if direction != 0 and direction == self._streak_dir:
            self._streak += 1
        else:
            self._streak = 1 if direction else 0
            self._streak_dir = direction
        if not self._armed or self._streak < cfg.turn_frames or direction == 0:
            return self.status
        turned: Step = "turn_left" if direction > 0 else "turn_right"
        step = self.current_step
        if step == turned:
            self._armed = False
            self._advance(obs.t)
        elif step in ("turn_left", "turn_right") and cfg.fail_on_wrong_turn:
            self._finish("failed", f"wrong_direction: asked {step}, saw {turned}")
        return self.status


@dataclass(frozen=True, slots=True)
class PassiveConfig:
    """Floors below which a face is considered frozen or motionless (docs/identity.md)."""

    min_frames: int = 10
    static_diff: float = 0.1
    """Median grey-level change in the face box between consecutive frames (1/4-size grey).
    Real clips: 0.48-1.24; a frozen frame: 0.0 (re-encoding leaves it well under 0.1). A still
    with camera noise (~0.3) passes this check and is caught by the landmark checks."""
    min_landmark_motion: float = 0.012
    """Std of landmark positions normalised by the eye distance (translation removed). Real clips
    give 0.03-0.08; the same still frame streamed 45 times gives 0.006 (landmark jitter)."""
    min_nonrigid_motion: float = 0.025
    """Residual after a similarity (Procrustes) fit to the mean shape, i.e. expression only:
    real clips 0.05-0.13, a still photo moved and rotated by hand about 0.01."""
    max_extra_s: float = 5.0
    """A challenge done in fewer than ``min_frames`` analysed frames (a slow link or a busy
    server analyses fewer per second) keeps collecting frames this long at most, so that a
    quick customer is judged on enough pictures instead of refused for too few."""


def _normalise(points: Landmarks) -> npt.NDArray[np.float64]:
    centre = (points[36:42].mean(axis=0) + points[42:48].mean(axis=0)) / 2.0
    eyes = float(np.linalg.norm(points[36:42].mean(axis=0) - points[42:48].mean(axis=0)))
    return np.asarray((points - centre) / max(eyes, 1e-6), dtype=np.float64)


def _procrustes_residual(ref: npt.NDArray[np.float64], pts: npt.NDArray[np.float64]) -> float:
    a = ref - ref.mean(axis=0)
    b = pts - pts.mean(axis=0)
    u, s, vt = np.linalg.svd(b.T @ a)
    rot = u @ vt
    scale = s.sum() / max(float((b**2).sum()), 1e-12)
    return float(np.sqrt(((b @ rot * scale - a) ** 2).sum(axis=1).mean()))


class PassiveLiveness:
    """Accumulates frame-to-frame evidence that the face is live (not frozen, not rigid)."""

    def __init__(self, config: PassiveConfig | None = None) -> None:
        self.config = config or PassiveConfig()
        self._diffs: list[float] = []
        self._shapes: list[npt.NDArray[np.float64]] = []

    @property
    def frames(self) -> int:
        """Frames with a face fed so far (what the verdict rests on)."""
        return len(self._shapes)

    @property
    def enough(self) -> bool:
        """Whether enough frames with a face have been seen to judge."""
        return self.frames >= self.config.min_frames

    def feed(self, obs: Observation) -> None:
        """Feed one observation; frames without a face are ignored."""
        if obs.landmarks is None:
            return
        self._shapes.append(_normalise(obs.landmarks))
        if obs.face_motion is not None:
            self._diffs.append(obs.face_motion)

    def metrics(self) -> dict[str, float]:
        """pixel_diff (median), landmark_motion and nonrigid_motion (see :class:`PassiveConfig`)."""
        shapes = np.array(self._shapes) if self._shapes else np.zeros((0, 68, 2))
        pixel_diff = float(np.median(self._diffs)) if self._diffs else math.nan
        if len(shapes) < 2:
            return {"pixel_diff": pixel_diff, "landmark_motion": 0.0, "nonrigid_motion": 0.0}
        motion = float(shapes.std(axis=0).mean())
        ref = shapes.mean(axis=0)
        residuals = [_procrustes_residual(ref, s) for s in shapes]
        nonrigid = float(np.std(residuals) + np.mean(residuals))
        return {"pixel_diff": pixel_diff, "landmark_motion": motion, "nonrigid_motion": nonrigid}

    def reasons(self) -> list[str]:
        """Why the face does not look live (empty list: nothing suspicious)."""
        cfg = self.config
        if not self.enough:
            return ["insufficient_frames"]
        m = self.metrics()
        out: list[str] = []
        if not math.isnan(m["pixel_diff"]) and m["pixel_diff"] < cfg.static_diff:
            out.append("static_video")
        if m["landmark_motion"] < cfg.min_landmark_motion:
            out.append("no_motion")
        elif m["nonrigid_motion"] < cfg.min_nonrigid_motion:
            out.append("rigid_face")
        return out


@dataclass(frozen=True, slots=True)
class LivenessResult:
    """The liveness verdict with every reason for a refusal (for the agent and the audit log)."""

    passed: bool
    reasons: tuple[str, ...]
    challenge_status: Status
    steps: tuple[Step, ...]
    completed_steps: int
    blinks: int
    metrics: dict[str, float]


class LivenessMonitor:
    """Active challenge and passive checks over one session, fed the same observations."""

    def __init__(
        self,
        challenge: Challenge,
        config: LivenessConfig | None = None,
        passive: PassiveConfig | None = None,
    ) -> None:
        self.session = ChallengeSession(challenge, config or LivenessConfig())
        self.passive = PassiveLiveness(passive)

    def collecting(self, t: float) -> bool:
        """Whether frames are still wanted at time ``t``: while the challenge runs, and after
        it passed until the passive checks have enough frames (at most ``max_extra_s``)."""
        s = self.session
        if s.check_time(t) == "running":
            return True
        return (
            s.status == "passed"
            and s.passed_at is not None
            and not self.passive.enough
            and t - s.passed_at < self.passive.config.max_extra_s
        )

    def feed(self, obs: Observation) -> Status:
        """Feed one observation to both layers; returns the challenge status."""
        self.passive.feed(obs)
        return self.session.feed(obs)

    def result(self) -> LivenessResult:
        """The verdict so far: passed only if the challenge passed and no passive reason fired."""
        s = self.session
        reasons = list(s.reasons)
        if s.status == "running":
            reasons.append(f"challenge_incomplete: waiting for {s.current_step}")
        reasons.extend(self.passive.reasons())
        metrics = self.passive.metrics()
        metrics.update(yaw_min=s.yaw_min, yaw_max=s.yaw_max)
        return LivenessResult(
            passed=s.status == "passed" and not reasons,
            reasons=tuple(reasons),
            challenge_status=s.status,
            steps=s.challenge.steps,
            completed_steps=s.completed,
            blinks=s.blinks,
            metrics=metrics,
        )
