"""The benchmark runs end to end (tiny: one call, two seconds)."""

from __future__ import annotations

import pytest

from signaling.media import bench


@pytest.mark.slow
async def test_bench_one_session() -> None:
    result = await bench.run(1, 2.0, warmup=2.5)
    for key in ("sessions", "fps_min", "cpu_percent", "rss_mb_start", "rss_mb_end"):
        assert key in result
    assert result["sessions"] == 1 and result["connected_sessions"] == 1
    assert result["fps_min"] >= 15
    assert 0 < result["cpu_percent"] < 200
    assert result["rss_mb_end"] >= result["rss_mb_start"] > 0
    assert "event_loop" in result["cpu_s_by_thread"]


def test_process_probes() -> None:
    assert bench.rss_mb() > 10
    cpu = bench.thread_cpu()
    assert any(name == "MainThread" for name, _ in cpu.values())
