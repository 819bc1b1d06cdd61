"""Calibrate the match threshold on labelled face pairs.

    python -m vbank.identity.calibrate --pairs /work/shared/faces/photos/pairs.csv \\
        --identities /work/shared/faces/photos/identities.csv \\
        --out vbank/identity/calibration.json

Each image is encoded once, both as a *reference* (jitters + mirror, as for an uploaded photo)
and as a *probe* (no jitter, as for a live frame); a pair's distance is reference(a) to probe(b).
The threshold is the largest one that accepts at most ``target_far`` of the impostor pairs; with
``--identities`` the impostor set is every pair of different people among the single-face images
(thousands of pairs, so that a 0.1 % FAR means something), otherwise the pairs file alone.
face_recognition's own pipeline (HOG upsampled once, 5-point alignment, tolerance 0.6) is
measured on the same pairs for comparison.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vbank.identity import images, matching

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.6
Pair = tuple[str, str, bool]


@dataclass(frozen=True, slots=True)
class ImageEncodings:
    """The three encodings of one labelled image (any may be None if no face was found)."""

    reference: npt.NDArray[np.float64] | None
    probe: npt.NDArray[np.float64] | None
    default: npt.NDArray[np.float64] | None


def _resolve(base: Path, rel: str) -> Path:
    for root in (base, base.parent):
        if (root / rel).exists():
            return root / rel
    return base / rel


def read_pairs(path: Path) -> list[Pair]:
    """``path_a,path_b,same_person`` rows."""
    with path.open(newline="") as f:
        return [(r["path_a"], r["path_b"], r["same_person"] == "1") for r in csv.DictReader(f)]


def pairs_from_identities(path: Path) -> list[Pair]:
    """All pairs of single-face images from ``path,person,faces_in_image,note`` rows."""
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["faces_in_image"] == "1"]
    return [
        (a["path"], b["path"], a["person"] == b["person"])
        for a, b in itertools.combinations(rows, 2)
    ]


def encode_image(path: Path, jitters: int, flip: bool) -> ImageEncodings:
    """Reference, probe and face_recognition-default encodings of one image file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition

    image = images.decode_image(path.read_bytes())
    reference = probe = default = None
    try:
        face = images.find_reference_face(image, min_face_px=0, several_ratio=math.inf)
    except images.ImageRejected as exc:
        logger.warning("%s: %s", path, exc)
    else:
        reference = matching.encode_reference_face(face, jitters=jitters, flip=flip)
        probe = matching.encode_live(face.image, face.box, face.landmarks)
    locations = face_recognition.face_locations(image)
    if locations:
        largest = max(locations, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        default = np.asarray(face_recognition.face_encodings(image, [largest])[0])
    return ImageEncodings(reference, probe, default)


def encode_all(
    paths: Iterable[str], base: Path, jitters: int, flip: bool, cache: Path | None = None
) -> dict[str, ImageEncodings]:
    """Encode each distinct image once (optionally reusing an ``.npz`` cache)."""
    cached: dict[str, npt.NDArray[np.float64]] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            cached = {k: data[k] for k in data.files}
    out: dict[str, ImageEncodings] = {}
    todo = sorted(set(paths))
    for i, rel in enumerate(todo, 1):
        keys = [f"{rel}|{kind}|j{jitters}|f{int(flip)}" for kind in ("reference", "probe")]
        keys.append(f"{rel}|default")
        if all(k in cached or f"{k}|none" in cached for k in keys):
            got = [cached.get(k) for k in keys]
            out[rel] = ImageEncodings(*got)
            continue
        t0 = time.perf_counter()
        enc = encode_image(_resolve(base, rel), jitters, flip)
        out[rel] = enc
        for k, v in zip(keys, (enc.reference, enc.probe, enc.default), strict=True):
            if v is None:
                cached[f"{k}|none"] = np.zeros(0)
            else:
                cached[k] = v
        logger.info("[%d/%d] %s %.1fs", i, len(todo), rel, time.perf_counter() - t0)
        if cache is not None:
            np.savez(cache, **cached)  # type: ignore[arg-type]
    return out


def threshold_at_far(
    genuine: npt.NDArray[np.float64], impostor: npt.NDArray[np.float64], target_far: float
) -> dict[str, float]:
    """Largest threshold accepting at most ``floor(target_far * n)`` impostors (≤ accepts).

    The threshold is rounded down to 0.001 below the first impostor distance that must be refused.
    """
    imp = np.sort(impostor)
    allowed = math.floor(target_far * len(imp) + 1e-9)
    if allowed >= len(imp):
        threshold = float(max(imp.max(), genuine.max()))
    else:
        threshold = math.floor(imp[allowed] * 1000 - 1e-6) / 1000
    return {
        "threshold": threshold,
        "tar": float(np.mean(genuine <= threshold)),
        "far": float(np.mean(impostor <= threshold)),
        "impostor_accepts": int(np.sum(impostor <= threshold)),
    }


def rates_at(
    genuine: npt.NDArray[np.float64], impostor: npt.NDArray[np.float64], threshold: float
) -> dict[str, float]:
    """TAR/FAR/FRR at a given threshold."""
    tar = float(np.mean(genuine <= threshold))
    return {
        "threshold": threshold,
        "tar": tar,
        "frr": 1.0 - tar,
        "far": float(np.mean(impostor <= threshold)),
    }


def pair_distances(
    pairs: Sequence[Pair], enc: dict[str, ImageEncodings], kind: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
    """(genuine, impostor, skipped) distances; ``kind`` is ``ours`` or ``default``."""
    genuine: list[float] = []
    impostor: list[float] = []
    skipped = 0
    for a, b, same in pairs:
        ea, eb = enc[a], enc[b]
        if kind == "ours":
            va, vb = ea.reference, eb.probe
        else:
            va, vb = ea.default, eb.default
        if va is None or vb is None:
            skipped += 1
            continue
        (genuine if same else impostor).append(float(np.linalg.norm(va - vb)))
    return np.array(genuine), np.array(impostor), skipped


def evaluate(
    pairs: Sequence[Pair], enc: dict[str, ImageEncodings], target_far: float
) -> dict[str, Any]:
    """Both pipelines' TAR at FAR 1e-2 / 1e-3 / target, and the default at 0.6."""
    result: dict[str, Any] = {}
    for kind in ("ours", "default"):
        genuine, impostor, skipped = pair_distances(pairs, enc, kind)
        entry: dict[str, Any] = {
            "genuine_pairs": len(genuine),
            "impostor_pairs": len(impostor),
            "skipped_pairs": skipped,
            "far_1e-2": threshold_at_far(genuine, impostor, 1e-2),
            "far_1e-3": threshold_at_far(genuine, impostor, 1e-3),
            "target": threshold_at_far(genuine, impostor, target_far),
            "at_0.6": rates_at(genuine, impostor, DEFAULT_TOLERANCE),
            "genuine_max": float(genuine.max()) if len(genuine) else math.nan,
            "impostor_min": float(impostor.min()) if len(impostor) else math.nan,
        }
        result[kind] = entry
    return result


def calibrate(
    pairs_csv: Path,
    identities_csv: Path | None = None,
    *,
    target_far: float = 1e-3,
    jitters: int = matching.REFERENCE_JITTERS,
    flip: bool = True,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Run the whole calibration and return the JSON-ready report."""
    base = pairs_csv.parent
    pairs = read_pairs(pairs_csv)
    all_pairs = pairs_from_identities(identities_csv) if identities_csv else []
    paths = [p for a, b, _ in itertools.chain(pairs, all_pairs) for p in (a, b)]
    enc = encode_all(paths, base, jitters, flip, cache)
    report: dict[str, Any] = {
        "created": dt.date.today().isoformat(),
        "pipeline": {
            "reference": f"HOG detection, 68 landmarks, dlib ResNet, {jitters} jitters"
            + (", mean with mirrored image" if flip else ""),
            "probe": "same landmarks, no jitter (as a live frame)",
            "distance": "euclidean, reference(a) to probe(b); accept if distance <= threshold",
        },
        "target_far": target_far,
        "images": len(enc),
        "no_face": sorted(p for p, e in enc.items() if e.reference is None),
        "pairs_csv": {"file": pairs_csv.name, **evaluate(pairs, enc, target_far)},
    }
    chosen_set = "pairs_csv"
    if all_pairs:
        report["all_pairs"] = {
            "file": identities_csv.name if identities_csv else "",
            **evaluate(all_pairs, enc, target_far),
        }
        chosen_set = "all_pairs"
    ours = report[chosen_set]["ours"]
    target = ours["target"]
    source = (
        f"all pairs of single-face images in {identities_csv.name}"
        if all_pairs and identities_csv
        else pairs_csv.name
    )
    description = (
        f"{ours['genuine_pairs']} genuine / {ours['impostor_pairs']} impostor pairs ({source}, "
        "shared/faces: public-figure photos from face_recognition, deepface, openface examples)"
    )
    for name, set_pairs in (("pairs_csv", pairs), ("all_pairs", all_pairs)):
        if name in report:
            for kind in ("ours", "default"):
                genuine, impostor, _ = pair_distances(set_pairs, enc, kind)
                report[name][kind]["at_chosen"] = rates_at(genuine, impostor, target["threshold"])
    report["chosen"] = {
        "threshold": target["threshold"],
        "far": target["far"],
        "frr": 1.0 - target["tar"],
        "target_far": target_far,
        "impostor_pairs": ours["impostor_pairs"],
        "genuine_pairs": ours["genuine_pairs"],
        "dataset": description,
    }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", type=Path, required=True, help="pairs.csv (path_a,path_b,same_person)"
    )
    parser.add_argument(
        "--identities", type=Path, help="identities.csv: use all pairs for the threshold"
    )
    parser.add_argument("--out", type=Path, required=True, help="calibration.json to write")
    parser.add_argument("--target-far", type=float, default=1e-3)
    parser.add_argument("--jitters", type=int, default=matching.REFERENCE_JITTERS)
    parser.add_argument(
        "--no-flip", action="store_true", help="do not average with the mirror image"
    )
    parser.add_argument("--cache", type=Path, help="npz cache of encodings (re-runs are instant)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = calibrate(
        args.pairs,
        args.identities,
        target_far=args.target_far,
        jitters=args.jitters,
        flip=not args.no_flip,
        cache=args.cache,
    )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    chosen = report["chosen"]
    print(
        f"threshold {chosen['threshold']:.3f}: FAR {chosen['far']:.3%}, FRR {chosen['frr']:.2%} "
        f"({chosen['dataset']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
