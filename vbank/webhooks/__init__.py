"""Signed webhook callbacks (Standard Webhooks) from a transactional outbox.

``outbox.enqueue`` writes delivery rows in the caller's transaction; ``events`` maps audit
events to webhook events (installed on import, idempotently); ``worker`` delivers with
leases, retries and a dead-letter state; ``signing``, ``policy`` and ``ssrf`` are pure.
"""

from vbank.webhooks import events as _events

_events.install()
