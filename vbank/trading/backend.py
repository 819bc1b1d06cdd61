"""The interface every trading backend implements (built-in ledger, a bank's core system).

Callers hand over an operation with an idempotency key: executing the same key again
returns the first outcome and never moves money twice.  ``status_unknown`` means the
backend may or may not have executed it; only :meth:`TradingBackend.status` resolves it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from vbank.trading.operations import Operation, OperationError

logger = logging.getLogger(__name__)

State = Literal["executed", "status_unknown"]
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


@dataclass(frozen=True)
class Execution:
    """Outcome of one idempotency key.  ``replayed`` (not part of equality) says the
    result came from an earlier execution of the same key."""

    idempotency_key: str
    state: State
    kind: str = ""
    reference: str = ""
    amount_minor: int = 0
    currency: str = ""
    executed_at: datetime | None = None
    replayed: bool = field(default=False, compare=False)


class BackendUnavailable(Exception):
    """Nothing was sent: the backend could not be reached, retrying later is safe."""


def check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise OperationError(
            "bad_idempotency_key", "idempotency key must be 8-64 characters of [A-Za-z0-9_-]"
        )
    return key


class TradingBackend(Protocol):
    """Executes operations exactly once per idempotency key."""

    #: True when ``execute`` writes the ``transaction.executed`` audit event itself, in
    #: the same transaction as the money movement (the built-in ledger); otherwise the
    #: trading service records it when the backend reports the execution.
    audits_executions: bool

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
        """Execute (or return the earlier outcome of) ``idempotency_key``; raises
        :class:`OperationError` when the operation is refused."""
        ...

    async def status(self, idempotency_key: str) -> Execution | None:
        """The outcome of a key, or None when the backend never executed it."""
        ...

    async def close(self) -> None:
        """Release connections (at shutdown)."""
        ...
