"""Argument parsing for `vbank bench`; each benchmark lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

BENCHES: dict[str, str] = {
    "signalling": "chat and signalling over websockets vs a bare aiohttp relay",
    "media": "relayed and recorded 640x480 sessions at >= 15 fps",
    "face": "face tracking, encoding and accuracy vs face_recognition's defaults",
    "audit": "durable audit appends, verification and encryption vs raw hashlib/AES-GCM",
    "verify": "signalling round trips during a face verification vs the same call idle",
    "webhooks": "signed webhook deliveries from the outbox vs bare aiohttp POSTs",
    "ledger": "confirmed transfers through the trading service vs the bare ledger and SQLite",
}


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench", help="run a benchmark", description="Run a benchmark and print JSON."
    )
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name, text in BENCHES.items():
        p = bench_sub.add_parser(name, help=text, description=text)
        p.add_argument("--json", action="store_true", help="print JSON only (the default output)")
        p.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite)")
        if name == "signalling":
            p.add_argument("--clients", type=int, default=1000)
            p.add_argument("--seconds", type=float, default=10.0)
            p.add_argument("--rate", type=float, default=2000.0, help="offered msgs/s for latency")
        elif name == "media":
            p.add_argument(
                "--sessions", type=int, default=None, help="fixed count (default: search)"
            )
            p.add_argument("--minutes", type=float, default=0.5)
        elif name == "face":
            p.add_argument("--dataset", default=None, help="one sub-folder per person")
        elif name == "verify":
            p.add_argument("--seconds", type=float, default=5.0, help="idle baseline length")
        elif name == "audit":
            p.add_argument("--events", type=int, default=100_000)
        elif name == "ledger":
            p.add_argument("--clients", type=int, default=50)
            p.add_argument("--transfers", type=int, default=2000)
        elif name == "webhooks":
            p.add_argument("--events", type=int, default=2000)
            p.add_argument("--concurrency", type=int, default=32)
            p.add_argument("--batch", type=int, default=128)
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"vbank.bench.{args.bench}")
    result: dict[str, Any] = module.main(args)
    json.dump(result, sys.stdout, indent=None if args.json else 2)
    sys.stdout.write("\n")
    return 0
