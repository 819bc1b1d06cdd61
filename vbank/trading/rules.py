"""When a draft may be prepared and when a customer's confirmation counts.

Pure functions over times and states, so every rule is testable without a database:
a verified session is required, a verification older than the policy's maximum age must
be redone, and a draft above the step-up limit needs a face check *after* it was drafted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vbank.trading.operations import OperationError

REASONS: dict[str, str] = {
    "not_verified": "the customer's identity has not been verified in this session",
    "verification_stale": "the identity verification is too old: run the face check again",
    "step_up_required": "this amount needs a fresh face check before it can be confirmed",
    "draft_expired": "the draft expired before it was confirmed",
    "already_decided": "this draft was already decided",
    "card_mismatch": "the confirmation does not match the card that was shown",
    "contact_closed": "the contact is no longer active",
}


def refuse(reason: str) -> OperationError:
    return OperationError(reason, REASONS[reason])


@dataclass(frozen=True)
class Policy:
    """Configurable limits (Settings: VBANK_TRADE_DRAFT_TTL_S, VBANK_VERIFICATION_MAX_AGE_S,
    VBANK_STEP_UP_LIMIT_MINOR)."""

    draft_ttl_s: float = 300.0
    verification_max_age_s: float = 900.0
    step_up_limit_minor: int = 1_000_000  # above this amount (minor units): fresh face check

    def needs_step_up(self, amount_minor: int) -> bool:
        return amount_minor > self.step_up_limit_minor


def check_can_draft(verified_at: datetime | None, now: datetime, policy: Policy) -> None:
    """Drafting needs a verified session (a stale one is allowed: the confirm re-checks)."""
    if verified_at is None:
        raise refuse("not_verified")


def check_confirmation(
    *,
    state: str,
    now: datetime,
    expires_at: datetime,
    drafted_at: datetime,
    step_up: bool,
    verified_at: datetime | None,
    policy: Policy,
) -> None:
    """Raise the reason the customer's confirmation does not count yet, if any."""
    if state != "pending":
        raise refuse("already_decided")
    if now >= expires_at:
        raise refuse("draft_expired")
    if verified_at is None:
        raise refuse("not_verified")
    if now - verified_at > timedelta(seconds=policy.verification_max_age_s):
        raise refuse("verification_stale")
    if step_up and verified_at <= drafted_at:
        raise refuse("step_up_required")
