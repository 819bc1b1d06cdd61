"""Face matching: reference encodings, live encodings, fusion over frames and the decision.

The reference side is computed once per customer, so it can afford dlib's jittering and a mirrored
copy (which cancels part of the pose/lighting asymmetry between an ID photo and a webcam). The live
side is encoded from frames that passed the quality gates, with the landmarks the tracker already
found, and several frames are fused into one distance (a single frame can be unlucky: mid-blink,
mid-word). The threshold and its error rates come from ``calibration.json`` (see calibrate.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vbank.identity import _models
from vbank.identity._models import Box, Encoding, Landmarks, RGBImage
from vbank.identity.images import ReferenceFace, find_reference_face, load_reference

logger = logging.getLogger(__name__)

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
REFERENCE_JITTERS = 0
"""dlib jitters for reference photos. Measured on the 3871 + 224 calibration pairs (d′ of the
genuine/impostor distances): no flip/no jitter 5.55, mirror 5.76, 10 jitters 5.82, both 5.82,
with TAR at FAR 0.1 % unchanged by jitter; 10 jitters cost ten times the CPU (~2.5 s a photo), so
the mirror alone is used."""

Fusion = Literal["mean", "best_k"]
DEFAULT_FUSION: Fusion = "mean"
"""Chosen by measurement (docs/identity.md): mean encoding of the good frames."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """A threshold and what it meant on the calibration data."""

    threshold: float
    far: float
    """Impostor pairs accepted at the threshold, as a fraction (the false accept rate)."""
    frr: float
    """Genuine pairs refused at the threshold (the false reject rate)."""
    target_far: float
    impostor_pairs: int
    genuine_pairs: int
    dataset: str

    @property
    def meaning(self) -> str:
        """One sentence for logs and the agent's screen."""
        return (
            f"distance <= {self.threshold:.3f} accepted {self.far:.2%} of {self.impostor_pairs} "
            f"impostor pairs and refused {self.frr:.2%} of {self.genuine_pairs} genuine pairs "
            f"(target FAR {self.target_far:.1%}; {self.dataset})"
        )


def load_calibration(path: Path | None = None) -> Calibration:
    """Read the committed calibration (``vbank/identity/calibration.json``)."""
    data: dict[str, Any] = json.loads((path or CALIBRATION_PATH).read_text())
    chosen = data["chosen"]
    return Calibration(
        threshold=float(chosen["threshold"]),
        far=float(chosen["far"]),
        frr=float(chosen["frr"]),
        target_far=float(chosen["target_far"]),
        impostor_pairs=int(chosen["impostor_pairs"]),
        genuine_pairs=int(chosen["genuine_pairs"]),
        dataset=str(chosen["dataset"]),
    )


@dataclass(frozen=True, slots=True)
class ReferenceEncoding:
    """One encoding per reference photo (each already averaged over jitters and mirror)."""

    encodings: npt.NDArray[np.float64]
    """Shape (n_photos, 128)."""
    jitters: int
    flip: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """The match verdict with the numbers behind it."""

    match: bool
    distance: float
    threshold: float
    far: float
    frr: float
    meaning: str
    frames: int
    fusion: Fusion


def _flip(face: ReferenceFace) -> tuple[RGBImage, Box, Landmarks]:
    """The mirrored photo with its landmarks re-fitted in the mirrored face box (no detection)."""
    w = face.image.shape[1]
    image: RGBImage = np.ascontiguousarray(face.image[:, ::-1])
    box = Box(w - face.box.right, face.box.top, w - face.box.left, face.box.bottom)
    return image, box, _models.landmarks(image, box)


def encode_reference_face(
    face: ReferenceFace, *, jitters: int = REFERENCE_JITTERS, flip: bool = True
) -> Encoding:
    """Encoding of one reference face: jittered, averaged with its mirror image if ``flip``."""
    encodings = [_models.encode(face.image, face.box, face.landmarks, jitters)]
    if flip:
        image, box, points = _flip(face)
        encodings.append(_models.encode(image, box, points, jitters))
    out: Encoding = np.mean(encodings, axis=0)
    return out


def encode_reference(
    photos: Sequence[bytes | RGBImage], *, jitters: int = REFERENCE_JITTERS, flip: bool = True
) -> ReferenceEncoding:
    """Encode one or more reference photos (raw upload bytes or decoded RGB arrays).

    Raises :class:`~vbank.identity.images.ImageRejected` for a photo without exactly one usable
    face.
    """
    if not photos:
        raise ValueError("at least one reference photo is needed")
    rows = []
    for photo in photos:
        face = load_reference(photo) if isinstance(photo, bytes) else find_reference_face(photo)
        rows.append(encode_reference_face(face, jitters=jitters, flip=flip))
    return ReferenceEncoding(np.array(rows), jitters, flip)


def encode_live(frame: RGBImage, box: Box, landmarks: Landmarks) -> Encoding:
    """Encoding of a live frame from the tracker's landmarks (no re-detection, no jitter)."""
    return _models.encode(frame, box, landmarks, 0)


def distances(reference: ReferenceEncoding, live: Encoding) -> npt.NDArray[np.float64]:
    """Euclidean distance of one live encoding to each reference photo."""
    out: npt.NDArray[np.float64] = np.linalg.norm(reference.encodings - live, axis=1)
    return out


def fused_distance(
    reference: ReferenceEncoding,
    live: Sequence[Encoding],
    fusion: Fusion = DEFAULT_FUSION,
    k: int = 3,
) -> float:
    """One distance for several live frames.

    ``mean``: distance of the mean live encoding (noise in single frames averages out).
    ``best_k``: mean of the ``k`` smallest per-frame distances (robust to a few bad frames, but
    it also lets an impostor's luckiest frames through). Against several reference photos the
    closest photo counts.
    """
    if not live:
        raise ValueError("no live encodings")
    frames = np.asarray(live, dtype=np.float64)
    if fusion == "mean":
        return float(distances(reference, frames.mean(axis=0)).min())
    per_frame = np.array([distances(reference, f).min() for f in frames])
    return float(np.sort(per_frame)[: max(1, k)].mean())


def decide(
    reference: ReferenceEncoding,
    live: Sequence[Encoding],
    calibration: Calibration | None = None,
    fusion: Fusion = DEFAULT_FUSION,
) -> Decision:
    """Match verdict at the calibrated threshold (accept when ``distance <= threshold``)."""
    cal = calibration or load_calibration()
    distance = fused_distance(reference, live, fusion)
    decision = Decision(
        match=distance <= cal.threshold,
        distance=distance,
        threshold=cal.threshold,
        far=cal.far,
        frr=cal.frr,
        meaning=cal.meaning,
        frames=len(live),
        fusion=fusion,
    )
    logger.info(
        "face match %s: distance %.3f (threshold %.3f)", decision.match, distance, cal.threshold
    )
    return decision
