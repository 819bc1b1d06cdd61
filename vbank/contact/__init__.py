"""Contacts: a customer's conversation with the bank, and how it reaches an agent."""

from vbank.contact.routing import (
    AgentStatusName,
    AgentView,
    Assignment,
    QueuedContact,
    Requeue,
    Router,
    RoutingError,
    RoutingErrorCode,
)

__all__ = [
    "AgentStatusName",
    "AgentView",
    "Assignment",
    "QueuedContact",
    "Requeue",
    "Router",
    "RoutingError",
    "RoutingErrorCode",
]
