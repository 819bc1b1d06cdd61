"""Supervisor dashboard: live queue/agent snapshot and per-agent/skill/day statistics.

``period`` and ``stats`` are pure (dates and arithmetic over plain rows), ``live`` turns the
router's in-memory state into a snapshot, ``queries`` is the only module that reads the
database. The HTTP side is ``vbank/http/supervisor_views.py``.
"""
