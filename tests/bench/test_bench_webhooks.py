"""`vbank bench webhooks` runs end to end: everything delivered once, signed, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PG_ADMIN_URL


def test_bench_webhooks_prints_json_with_its_baseline(database_url: str) -> None:
    args = [sys.executable, "-m", "vbank.cli", "bench", "webhooks", "--events", "300", "--json"]
    if PG_ADMIN_URL:
        args += ["--database-url", database_url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["database"] == ("postgresql" if PG_ADMIN_URL else "sqlite")
    assert result["events"] == result["delivered"] == result["delivered_rows"] == 300
    assert result["lost"] == 0 and result["duplicates_after_dedup"] == 0
    assert result["bad_signatures"] == 0
    assert result["deliveries_per_s"] > 0 and result["baseline_posts_per_s"] > 0
    assert result["ratio"] == round(result["deliveries_per_s"] / result["baseline_posts_per_s"], 3)
