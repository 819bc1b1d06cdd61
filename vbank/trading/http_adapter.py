"""A trading backend that forwards operations to a bank's core system over HTTP.

Wire protocol (JSON): ``POST {base}/v1/executions`` with the idempotency key in the body
and the ``Idempotency-Key`` header; 200/201 answer an execution, 409/422 a refusal
(``reason``, ``message``), 5xx a transient failure.  ``GET {base}/v1/executions/{key}``
answers the execution or 404 when the core never executed the key.

Retries always reuse the same key, so the core executes at most once.  A timeout after
the request went out leaves the outcome unknown: we answer ``status_unknown`` and never
post again for it; :meth:`HttpBackend.status` resolves it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import aiohttp

from vbank.trading.backend import BackendUnavailable, Execution, check_key
from vbank.trading.operations import Operation, OperationError

logger = logging.getLogger(__name__)


class ProtocolError(Exception):
    """The core system answered something this adapter does not understand."""


def _parse(data: Any, key: str) -> Execution:
    if not isinstance(data, dict) or data.get("idempotency_key") != key:
        raise ProtocolError("execution answer does not name our idempotency key")
    if data.get("state") != "executed":
        raise ProtocolError(f"unexpected execution state {data.get('state')!r}")
    amount = data.get("amount_minor", 0)
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ProtocolError("amount_minor must be an integer")
    at = data.get("executed_at")
    return Execution(
        idempotency_key=key,
        state="executed",
        kind=str(data.get("kind", "")),
        reference=str(data.get("reference", "")),
        amount_minor=amount,
        currency=str(data.get("currency", "")),
        executed_at=datetime.fromisoformat(at) if isinstance(at, str) else None,
        replayed=bool(data.get("replayed", False)),
    )


class HttpBackend:
    """:class:`~vbank.trading.backend.TradingBackend` for a core system reached over HTTP."""

    audits_executions = False

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))

    async def execute(
        self,
        op: Operation,
        idempotency_key: str,
        *,
        customer_id: int,
        card_hash: str = "",
        actor_id: int | None = None,
        session_ref: str | None = None,
    ) -> Execution:
        key = check_key(idempotency_key)
        body = {
            "idempotency_key": key,
            "customer_id": customer_id,
            "card_hash": card_hash,
            "operation": op.model_dump(mode="json"),
        }
        maybe_sent = False
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._client().post(
                    f"{self.base_url}/v1/executions", json=body, headers={"Idempotency-Key": key}
                ) as resp:
                    if resp.status >= 500:
                        maybe_sent = True
                        logger.warning("core answered %s (attempt %s)", resp.status, attempt)
                    elif resp.status in (200, 201):
                        return _parse(await resp.json(), key)
                    elif resp.status in (400, 409, 422):
                        data = await resp.json()
                        raise OperationError(
                            str(data.get("reason", "refused_by_core")),
                            str(data.get("message", "the core system refused the operation")),
                        )
                    else:
                        raise ProtocolError(f"unexpected HTTP status {resp.status}")
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # nothing reached the core: safe to try again
                logger.warning("core unreachable (attempt %s): %s", attempt, type(exc).__name__)
            except TimeoutError:
                # the request went out and no answer came: it may have executed
                logger.warning("core timed out: outcome of the execution unknown")
                return Execution(key, "status_unknown")
            except aiohttp.ClientError as exc:
                maybe_sent = True
                logger.warning(
                    "core connection failed (attempt %s): %s", attempt, type(exc).__name__
                )
            if attempt < self.attempts:
                await self._pause(attempt)
        if maybe_sent:
            return Execution(key, "status_unknown")
        raise BackendUnavailable("the core system could not be reached; nothing was sent")

    async def status(self, idempotency_key: str) -> Execution | None:
        """Ask the core what became of a key (the only way out of ``status_unknown``)."""
        key = check_key(idempotency_key)
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._client().get(f"{self.base_url}/v1/executions/{key}") as resp:
                    if resp.status == 404:
                        return None
                    if resp.status == 200:
                        return _parse(await resp.json(), key)
                    if resp.status < 500:
                        raise ProtocolError(f"unexpected HTTP status {resp.status}")
                    logger.warning("core status query answered %s", resp.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                logger.warning(
                    "core status query failed (attempt %s): %s", attempt, type(exc).__name__
                )
            if attempt < self.attempts:
                await self._pause(attempt)
        raise BackendUnavailable("the core system did not answer the status query")
