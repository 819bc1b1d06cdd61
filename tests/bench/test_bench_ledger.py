"""`vbank bench ledger` runs end to end: money conserved, each transfer executed once, and
its baselines measured in the same run (not a timing target)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PG_ADMIN_URL


def test_bench_ledger_prints_json_with_its_baselines(database_url: str) -> None:
    args = [sys.executable, "-m", "vbank.cli", "bench", "ledger", "--json"]
    args += ["--clients", "8", "--transfers", "80"]
    if PG_ADMIN_URL:
        args += ["--database-url", database_url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["database"] == ("postgresql" if PG_ADMIN_URL else "sqlite")
    assert (result["clients"], result["transfers"]) == (8, 80)
    assert result["conserved"] is True and result["executed_once"] is True
    assert result["negative_balances"] == 0
    assert result["transfers_per_s"] > 0 and result["backend_transfers_per_s"] > 0
    assert result["service_ratio"] == round(
        result["transfers_per_s"] / result["backend_transfers_per_s"], 3
    )
    if not PG_ADMIN_URL:
        assert result["raw_sqlite_transfers_per_s"] > 0
        assert result["raw_ratio"] == round(
            result["transfers_per_s"] / result["raw_sqlite_transfers_per_s"], 3
        )
