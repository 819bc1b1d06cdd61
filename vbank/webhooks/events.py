"""Audit events that become webhooks, with thin data (ids and codes, no personal data).

The listener runs inside the transaction that appends the audit event, so the outbox
row commits or rolls back with the change itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from sqlalchemy.orm import Session

from audit.log import LoggedEvent, subscribe
from vbank.webhooks.outbox import enqueue_sync

logger = logging.getLogger(__name__)


def _contact_closed(ref: str | None, p: Mapping[str, Any]) -> dict[str, Any]:
    return {"contact_id": ref, "reason": p.get("reason"), "agent_id": p.get("agent_id")}


def _verification(ref: str | None, p: Mapping[str, Any]) -> dict[str, Any]:
    return {"contact_id": ref, "attempt_id": p.get("attempt_id"), "outcome": p.get("outcome")}


def _transaction(ref: str | None, p: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "contact_id": ref,
        "reference": p.get("reference"),
        "kind": p.get("kind"),
        "customer_id": p.get("customer_id"),
        "amount_minor": p.get("amount_minor"),
        "currency": p.get("currency"),
    }


# audit event type -> (webhook event type, thin data builder)
MAPPING: Final[dict[str, tuple[str, Callable[[str | None, Mapping[str, Any]], dict[str, Any]]]]] = {
    "contact.closed": ("contact.closed", _contact_closed),
    "verify.decision": ("verification.completed", _verification),
    "transaction.executed": ("transaction.executed", _transaction),
}


def on_audit_event(session: Session, row: LoggedEvent) -> None:
    webhook_type, build = MAPPING[row.type]
    data = build(row.session_ref, json.loads(row.payload))
    data["audit_seq"] = row.seq
    enqueue_sync(session, webhook_type, data)


def install() -> None:
    """Subscribe to the audit log (idempotent: the log ignores a repeated listener)."""
    subscribe(MAPPING, on_audit_event)
