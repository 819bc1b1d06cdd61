"""`vbank bench audit` runs end to end and reports consistent numbers (not timing targets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PG_ADMIN_URL


def test_bench_audit_prints_json_with_its_baselines(database_url: str) -> None:
    args = [sys.executable, "-m", "vbank.cli", "bench", "audit", "--events", "600", "--json"]
    if PG_ADMIN_URL:
        args += ["--database-url", database_url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["events"] == 600
    assert result["database"] == ("postgresql" if PG_ADMIN_URL else "sqlite")
    for key in (
        "append_per_s",
        "verify_per_s",
        "hashlib_per_s",
        "encrypt_mb_per_s",
        "aesgcm_mb_per_s",
    ):
        assert result[key] > 0, key
    assert 0 < result["verify_ratio"] == round(result["verify_per_s"] / result["hashlib_per_s"], 3)
    assert 0 < result["encrypt_ratio"] <= 2
