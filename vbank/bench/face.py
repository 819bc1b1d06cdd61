"""`vbank bench face`: tracking, encoding and accuracy of our pipeline vs face_recognition."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vbank.identity import bench


def main(args: argparse.Namespace) -> dict[str, Any]:
    return bench.run(Path(args.dataset) if args.dataset else None)
