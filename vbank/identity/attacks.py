"""Presentation-attack rates of the liveness layer, measured on recorded observations.

A *replay* attacker plays a recorded video of the customer (looped, as an attacker would)
to the camera; a *print* attacker shows a still photo. The active challenge draws its
steps at random per attempt, so a recording passes only if it happens to contain the
drawn movements in the drawn order within the time limit. These functions replay recorded
landmark observations against many random challenges and report the acceptance rate
(APCER, ISO/IEC 30107-3) of each attack.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace

from vbank.identity.liveness import Challenge, LivenessMonitor, Observation

logger = logging.getLogger(__name__)


def looped(observations: Sequence[Observation], duration_s: float) -> list[Observation]:
    """The observations repeated back to back until ``duration_s`` (a looping replay)."""
    if not observations:
        return []
    span = (
        observations[-1].t
        - observations[0].t
        + (observations[1].t - observations[0].t if len(observations) > 1 else 0.1)
    )
    out: list[Observation] = []
    offset = 0.0
    while offset < duration_s:
        for obs in observations:
            t = obs.t - observations[0].t + offset
            if t > duration_s:
                break
            out.append(replace(obs, t=t))
        offset += span
    return out


def acceptance_rate(
    observations: Sequence[Observation],
    *,
    attempts: int = 200,
    n_steps: int = 4,
    time_limit: float = 20.0,
    seed: int = 2026,
) -> float:
    """Share of random challenges that the recorded stream passes (challenge and passive)."""
    rng = random.Random(seed)
    stream = looped(observations, time_limit + 1.0)
    passed = 0
    for _ in range(attempts):
        challenge = Challenge.random(rng, n_steps=n_steps, time_limit=time_limit)
        monitor = LivenessMonitor(challenge)
        for obs in stream:
            if monitor.feed(obs) != "running":
                break
        if monitor.result().passed:
            passed += 1
    return passed / attempts
