"""`vbank bench signalling` end to end at a toy size: every message must reach the agent
exactly once and be stored, on vbank and on the relay baseline. Timing targets belong to
the benchmark itself, not to tests, so none are asserted here."""

from __future__ import annotations

import argparse

import pytest

from vbank.bench import signalling

pytestmark = pytest.mark.slow

KEYS = {
    "clients",
    "p50_ms",
    "p99_ms",
    "msgs_per_s",
    "echo_msgs_per_s",
    "ratio",
    "echo_p50_ms",
    "echo_p99_ms",
    "delivered",
    "lost",
    "duplicates",
    "batches",
    "mean_batch",
    "database",
}


def test_bench_delivers_every_message_once() -> None:
    args = argparse.Namespace(clients=20, seconds=1.5, rate=40.0, database_url=None, json=True)
    result = signalling.main(args)

    assert KEYS <= result.keys()
    assert result["clients"] == 20 and result["database"] == "sqlite"
    for side in ("vbank", "echo"):
        run = result[side]
        assert run["sent"] > 0 and run["delivered"] == run["sent"], run
        assert run["lost"] == 0 and run["unacked"] == 0, run
        assert run["duplicates"] == 0 and run["unknown"] == 0 and run["reordered"] == 0, run
        assert run["errors"] == {}, run
        for phase in ("latency", "throughput"):
            assert run[phase]["delivered"] > 0 and run[phase]["drained"], run[phase]
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["stored"] == result["vbank"]["sent"]  # acknowledged means persisted
    assert result["batches"] > 0 and result["mean_batch"] >= 1
    assert result["msgs_per_s"] > 0 and result["echo_msgs_per_s"] > 0
    assert result["ratio"] > 0
    assert result["p99_ms"] is not None and result["echo_p99_ms"] is not None


def test_bench_refuses_unbounded_configurations() -> None:
    for clients, seconds in ((3, 1.0), (0, 1.0), (signalling.MAX_CLIENTS + 2, 1.0), (4, 0.0)):
        args = argparse.Namespace(
            clients=clients, seconds=seconds, rate=10.0, database_url=None, json=True
        )
        with pytest.raises(SystemExit):
            signalling.main(args)
