"""The transactional outbox: delivery rows written in the caller's transaction.

A webhook is only ever announced for a change that committed, and never lost for one
that did: the row commits or rolls back with the event.  After a commit that wrote
rows, in-process workers are woken at once; workers elsewhere find the rows by polling.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, cast

from sqlalchemy import Table, event, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from vbank.webhooks.models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

EVENT_TYPES: Final = (
    "contact.closed",
    "survey.invited",
    "survey.completed",
    "verification.completed",
    "transaction.executed",
)

_DELIVERIES = cast(Table, WebhookDelivery.__table__)
_wakers: list[Callable[[], None]] = []
_HOOKED: Final = "vbank.webhooks.wake_after_commit"


def add_waker(callback: Callable[[], None]) -> None:
    """Call ``callback`` after every commit that enqueued deliveries (workers' wake-up)."""
    if callback not in _wakers:
        _wakers.append(callback)


def remove_waker(callback: Callable[[], None]) -> None:
    if callback in _wakers:
        _wakers.remove(callback)


def _wake(_session: Session) -> None:
    for callback in list(_wakers):
        callback()


def wake_after_commit(session: Session) -> None:
    """Wake in-process workers once this session's transaction commits (not before:
    they would not see the rows yet)."""
    if not session.info.get(_HOOKED):
        session.info[_HOOKED] = True
        event.listen(session, "after_commit", _wake)


def new_msg_id() -> str:
    return "msg_" + secrets.token_hex(16)


def payload(event_type: str, data: Mapping[str, Any], at: datetime) -> str:
    """A thin Standard Webhooks body: type, time and ids (receivers fetch the rest)."""
    return json.dumps(
        {
            "type": event_type,
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "data": dict(data),
        },
        separators=(",", ":"),
        sort_keys=True,
    )


async def enqueue(session: AsyncSession, event_type: str, data: Mapping[str, Any]) -> int:
    """Write one delivery row per enabled endpoint subscribed to ``event_type``, in the
    caller's transaction; returns how many rows were written.

    ``data`` must hold ids and codes only (no personal data): it is sent as is.
    """
    return await session.run_sync(enqueue_sync, event_type, data)


_ENABLED = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
    WebhookEndpoint.enabled.is_(True)
)
_CACHE: Final = "vbank.webhooks.endpoints"


def _endpoints(session: Session) -> list[tuple[int, str]]:
    """Enabled endpoints, read once per transaction (a batch of transfers enqueues many
    events; endpoints change through other transactions)."""
    transaction = session.get_transaction()
    cached = session.info.get(_CACHE)
    if cached is not None and cached[0] is transaction:
        return cast(list[tuple[int, str]], cached[1])
    rows = [(int(i), str(t)) for i, t in session.execute(_ENABLED).all()]
    session.info[_CACHE] = (transaction, rows)
    return rows


def enqueue_sync(session: Session, event_type: str, data: Mapping[str, Any]) -> int:
    """:func:`enqueue` on a blocking session (audit listeners, the group-commit writer)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    endpoints = _endpoints(session)
    targets = [ep_id for ep_id, types in endpoints if event_type in types.split(",")]
    if not targets:
        return 0
    now = datetime.now(UTC)
    body = payload(event_type, data, now)
    msg_id = new_msg_id()
    session.execute(
        insert(_DELIVERIES),  # Core: no ORM bookkeeping for rows nobody reads here
        [
            {
                "msg_id": msg_id,
                "endpoint_id": ep_id,
                "event_type": event_type,
                "body": body,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for ep_id in targets
        ],
    )
    wake_after_commit(session)
    logger.debug("enqueued %s for %d endpoint(s) as %s", event_type, len(targets), msg_id)
    return len(targets)
