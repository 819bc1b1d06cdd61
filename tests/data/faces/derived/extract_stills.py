"""Re-create the reference stills in this folder from the shared face videos.

    .venv/bin/python tests/data/faces/derived/extract_stills.py /work/shared/faces

Each still is one decoded frame (PyAV, RGB) saved by OpenCV as JPEG quality 95, unscaled. The
frames were picked in the second half of each clip (frontal, eyes open, sharp), away from the
start that Chromium's fake camera plays first, so a demo does not compare a frame with itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import cv2

STILLS = {
    "katie_hill_f106.jpg": (
        "video/OpenTalker__SadTalker/examples/ref_video/WDA_KatieHill_000.mp4",
        106,
    ),
    "aoc_f118.jpg": (
        "video/OpenTalker__SadTalker/examples/ref_video/WDA_AlexandriaOcasioCortez_000.mp4",
        118,
    ),
    "liveportrait_d18_f200.jpg": (
        "video/KwaiVGI__LivePortrait/assets/examples/driving/d18.mp4",
        200,
    ),
}


def extract(shared: Path, out_dir: Path) -> None:
    """Write every still of :data:`STILLS` into ``out_dir``."""
    for name, (rel, index) in STILLS.items():
        with av.open(str(shared / rel)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i == index:
                    bgr = frame.to_ndarray(format="bgr24")
                    cv2.imwrite(str(out_dir / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
                    break


if __name__ == "__main__":
    extract(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/faces"), Path(__file__).parent)
