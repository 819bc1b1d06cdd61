"""Identity verification by face match and liveness (pure computation: no web, no database).

- :mod:`vbank.identity.images`: safe decoding of uploaded reference photos, one-face checks.
- :mod:`vbank.identity.quality`: per-frame quality gates and the face tracker (guidance codes).
- :mod:`vbank.identity.matching`: reference/live encodings, multi-frame fusion, the decision.
- :mod:`vbank.identity.liveness`: blink / head-turn challenge and passive anti-replay checks.
- :mod:`vbank.identity.pool`: process pool so face work never runs on the event loop.
- :mod:`vbank.identity.calibrate`: threshold calibration (writes ``calibration.json``).
- :mod:`vbank.identity.bench`: timing and accuracy benchmark (``vbank bench face``).

See docs/identity.md for the design, the measured numbers and the sign conventions.
"""
