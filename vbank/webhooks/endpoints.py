"""Endpoint management and the dead-letter list (supervisor actions), each audited.

Secrets leave this module once, in the return value of :func:`create` and
:func:`rotate_secret`; they are stored sealed and never logged or audited.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from audit.envelope import EnvelopeError, MasterKeyring
from audit.log import Actor, append
from vbank.db import Database
from vbank.webhooks import sealing, ssrf
from vbank.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookSecret
from vbank.webhooks.outbox import EVENT_TYPES, wake_after_commit
from vbank.webhooks.sealing import seal
from vbank.webhooks.signing import new_secret

logger = logging.getLogger(__name__)

MAX_SECRETS = 4


class WebhookError(Exception):
    """A refused management action; ``status`` and ``code`` map to a problem answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _not_found(what: str) -> WebhookError:
    return WebhookError(404, "not_found", f"no such {what}")


@dataclass(frozen=True)
class EndpointView:
    id: int
    url: str
    event_types: tuple[str, ...]
    enabled: bool
    disabled_reason: str | None
    allow_private: bool
    created_by: int | None
    created_at: datetime
    secret_ids: tuple[int, ...]
    pending: int
    dead: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "event_types": list(self.event_types),
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "allow_private": self.allow_private,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "secret_ids": list(self.secret_ids),
            "pending": self.pending,
            "dead": self.dead,
        }


def _iso(ts: datetime) -> str:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()


def normalise_types(types: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(sorted(set(types)))
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if not chosen or unknown:
        raise WebhookError(400, "invalid_request", f"event types must be some of {EVENT_TYPES}")
    return chosen


async def validate_url(url: str, *, allow_private: bool) -> str:
    try:
        parsed = ssrf.parse_url(url, allow_private=allow_private)
        if not allow_private:
            assert parsed.host is not None
            await ssrf.check_resolves_public(parsed.host)
    except ssrf.InvalidURL as exc:
        raise WebhookError(400, "invalid_url", str(exc)) from None
    except ssrf.BlockedAddress:
        raise WebhookError(
            400, "private_address", "the URL points to a private or loopback address"
        ) from None
    return url


async def _get(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    row = await session.get(WebhookEndpoint, endpoint_id)
    if row is None:
        raise _not_found("endpoint")
    return row


async def view(
    session: AsyncSession, endpoint_ids: Sequence[int] | None = None
) -> list[EndpointView]:
    q = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
    if endpoint_ids is not None:
        q = q.where(WebhookEndpoint.id.in_(endpoint_ids))
    rows = (await session.execute(q)).scalars().all()
    secrets: dict[int, list[int]] = {}
    for ep_id, sid in await session.execute(
        select(WebhookSecret.endpoint_id, WebhookSecret.id).order_by(WebhookSecret.id)
    ):
        secrets.setdefault(ep_id, []).append(sid)
    counts: dict[tuple[int, str], int] = {
        (ep_id, state): n
        for ep_id, state, n in await session.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.state, func.count())
            .where(WebhookDelivery.state.in_(("pending", "dead")))
            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.state)
        )
    }
    return [
        EndpointView(
            id=r.id,
            url=r.url,
            event_types=tuple(sorted(r.event_set)),
            enabled=r.enabled,
            disabled_reason=r.disabled_reason,
            allow_private=r.allow_private,
            created_by=r.created_by,
            created_at=r.created_at,
            secret_ids=tuple(secrets.get(r.id, ())),
            pending=counts.get((r.id, "pending"), 0),
            dead=counts.get((r.id, "dead"), 0),
        )
        for r in rows
    ]


async def create(
    session: AsyncSession,
    keyring: MasterKeyring,
    *,
    url: str,
    event_types: Iterable[str],
    allow_private: bool,
    actor: Actor,
) -> tuple[EndpointView, str]:
    """A new enabled endpoint and its first secret (returned once, stored sealed)."""
    types = normalise_types(event_types)
    await validate_url(url, allow_private=allow_private)
    now = datetime.now(UTC)
    row = WebhookEndpoint(
        url=url,
        event_types=",".join(types),
        enabled=True,
        allow_private=allow_private,
        created_by=actor.user_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    secret = new_secret()
    session.add(WebhookSecret(endpoint_id=row.id, sealed=seal(secret, keyring), created_at=now))
    await session.flush()
    await append(
        session,
        "webhook.endpoint_created",
        {"endpoint_id": row.id, "event_types": list(types), "allow_private": allow_private},
        actor=actor,
    )
    logger.info("webhook endpoint %d created", row.id)
    [v] = await view(session, [row.id])
    return v, secret


async def set_enabled(
    session: AsyncSession, endpoint_id: int, enabled: bool, *, actor: Actor, reason: str | None
) -> EndpointView:
    """Disabling pauses the endpoint (its pending deliveries wait); enabling resumes it."""
    row = await _get(session, endpoint_id)
    row.enabled = enabled
    row.disabled_reason = None if enabled else (reason or "disabled_by_supervisor")
    row.updated_at = datetime.now(UTC)
    await append(
        session,
        "webhook.endpoint_enabled" if enabled else "webhook.endpoint_disabled",
        {"endpoint_id": endpoint_id, "reason": row.disabled_reason},
        actor=actor,
    )
    if enabled:
        wake_after_commit(session.sync_session)
    [v] = await view(session, [endpoint_id])
    return v


async def remove(session: AsyncSession, endpoint_id: int, *, actor: Actor) -> None:
    """Delete the endpoint with its secrets, deliveries and attempts."""
    await _get(session, endpoint_id)
    await session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
    await append(session, "webhook.endpoint_deleted", {"endpoint_id": endpoint_id}, actor=actor)


async def rotate_secret(
    session: AsyncSession, keyring: MasterKeyring, endpoint_id: int, *, actor: Actor
) -> tuple[int, str]:
    """Add a secret; every secret signs until removed, so receivers can switch over."""
    await _get(session, endpoint_id)
    count = (
        await session.execute(select(func.count()).where(WebhookSecret.endpoint_id == endpoint_id))
    ).scalar_one()
    if count >= MAX_SECRETS:
        raise WebhookError(409, "too_many_secrets", "remove an old secret first")
    secret = new_secret()
    row = WebhookSecret(
        endpoint_id=endpoint_id, sealed=seal(secret, keyring), created_at=datetime.now(UTC)
    )
    session.add(row)
    await session.flush()
    await append(
        session,
        "webhook.secret_added",
        {"endpoint_id": endpoint_id, "secret_id": row.id},
        actor=actor,
    )
    return row.id, secret


async def remove_secret(
    session: AsyncSession, endpoint_id: int, secret_id: int, *, actor: Actor
) -> None:
    """Retire a secret; the last one cannot go (every delivery must be signed)."""
    ids = (
        (
            await session.execute(
                select(WebhookSecret.id).where(WebhookSecret.endpoint_id == endpoint_id)
            )
        )
        .scalars()
        .all()
    )
    if secret_id not in ids:
        raise _not_found("secret")
    if len(ids) == 1:
        raise WebhookError(409, "last_secret", "an endpoint keeps at least one secret")
    await session.execute(delete(WebhookSecret).where(WebhookSecret.id == secret_id))
    await append(
        session,
        "webhook.secret_removed",
        {"endpoint_id": endpoint_id, "secret_id": secret_id},
        actor=actor,
    )


async def dead_letters(session: AsyncSession, *, limit: int = 200) -> list[dict[str, Any]]:
    rows = (
        (
            await session.execute(
                select(WebhookDelivery)
                .where(WebhookDelivery.state == "dead")
                .order_by(WebhookDelivery.finished_at.desc(), WebhookDelivery.id.desc())
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    return [
        {
            "id": r.id,
            "msg_id": r.msg_id,
            "endpoint_id": r.endpoint_id,
            "event_type": r.event_type,
            "attempts": r.attempts,
            "last_status": r.last_status,
            "last_error": r.last_error,
            "created_at": _iso(r.created_at),
            "finished_at": _iso(r.finished_at) if r.finished_at else None,
        }
        for r in rows
    ]


async def redeliver(session: AsyncSession, delivery_id: int, *, actor: Actor) -> None:
    """Put a dead letter back in the queue, due now, with a fresh attempt budget (the
    same ``webhook-id``: receivers that saw it already can de-duplicate)."""
    row = await session.get(WebhookDelivery, delivery_id)
    if row is None or row.state != "dead":
        raise _not_found("dead letter")
    endpoint = await _get(session, row.endpoint_id)
    if not endpoint.enabled:
        raise WebhookError(409, "endpoint_disabled", "enable the endpoint first")
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(
            state="pending",
            attempts=0,
            next_attempt_at=datetime.now(UTC),
            claimed_by=None,
            lease_until=None,
            finished_at=None,
        )
    )
    await append(
        session,
        "webhook.redelivered",
        {"delivery_id": delivery_id, "endpoint_id": row.endpoint_id, "msg_id": row.msg_id},
        actor=actor,
    )
    wake_after_commit(session.sync_session)


async def rewrap_secrets(db: Database, keyring: MasterKeyring) -> tuple[int, int, list[int]]:
    """Re-wrap every endpoint secret with the current master key: (re-wrapped, already
    current, ids of secrets that could not be opened)."""
    rewrapped = current = 0
    failed: list[int] = []
    async with db.transaction() as session:
        for row in await session.scalars(select(WebhookSecret).order_by(WebhookSecret.id)):
            try:
                new = sealing.rewrap(row.sealed, keyring)
            except EnvelopeError:
                logger.error("cannot re-wrap webhook secret %d", row.id)
                failed.append(row.id)
                continue
            if new is None:
                current += 1
            else:
                row.sealed = new
                rewrapped += 1
    return rewrapped, current, failed
