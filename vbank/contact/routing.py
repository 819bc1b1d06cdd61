"""Skill-based routing of customer contacts to video agents (pure, in-memory).

The server owns one :class:`Router`, feeds it arrivals, agent status/connection changes and
closes, and calls :meth:`Router.assign` after each change. Time is always passed in
(``now``, monotonic seconds) so the rules are deterministic and testable.

Ordering rule: contacts are served longest-waiting first *across* skills, except that
requeued contacts (agent lost past the grace period, or transferred to a skill) jump to the
head: they are ordered before every normal contact, among themselves by original arrival.

Agent choice: the customer must not be able to pick (or predict) the agent who will
identify them on video. Among the agents eligible for a contact (connected, ``available``,
having the skill, spare capacity), the router keeps those with the lowest occupancy
(``load / capacity``) and picks one of them uniformly at random with the injected
``random.Random``. With ``prefer_least_loaded=False`` it picks uniformly among all eligible
agents. Nothing the customer sends influences the choice.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal

logger = logging.getLogger(__name__)

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

AgentStatusName = Literal["available", "away"]

MAX_CAPACITY: Final = 10


class RoutingErrorCode(StrEnum):
    NOT_FOUND = "not_found"  # unknown contact or agent
    FORBIDDEN = "forbidden"  # e.g. transfer by an agent who does not hold the contact
    UNAVAILABLE = "unavailable"  # target agent away or disconnected
    NO_CAPACITY = "no_capacity"  # target agent full, or capacity below current load
    UNKNOWN_SKILL = "unknown_skill"
    DUPLICATE = "duplicate"  # contact already queued or assigned
    INVALID = "invalid"  # malformed request (both/neither transfer targets, …)


class RoutingError(Exception):
    """A routing request that cannot be honoured; ``code`` maps to a protocol error."""

    def __init__(self, code: RoutingErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class QueuedContact:
    """A waiting contact. ``priority`` contacts (requeued/transferred) go to the head."""

    contact_id: str
    skill: str
    enqueued_at: float
    priority: bool = False
    order: int = 0  # arrival counter, tie-breaker for equal timestamps

    @property
    def sort_key(self) -> tuple[int, float, int]:
        return (0 if self.priority else 1, self.enqueued_at, self.order)


@dataclass(frozen=True, slots=True)
class Assignment:
    contact_id: str
    agent_id: str
    skill: str
    waited_s: float


@dataclass(frozen=True, slots=True)
class Requeue:
    """A contact taken from ``agent_id`` and put back at the head of ``skill``'s queue."""

    contact_id: str
    agent_id: str
    skill: str


@dataclass(frozen=True, slots=True)
class AgentView:
    """Read-only snapshot of an agent."""

    agent_id: str
    skills: frozenset[str]
    capacity: int
    status: AgentStatusName
    connected: bool
    contacts: frozenset[str]

    @property
    def load(self) -> int:
        return len(self.contacts)


@dataclass(slots=True)
class _Agent:
    agent_id: str
    skills: frozenset[str]
    capacity: int
    status: AgentStatusName
    connected: bool = True
    disconnected_at: float | None = None
    contacts: set[str] = field(default_factory=set)

    def eligible_for(self, skill: str) -> bool:
        return (
            self.connected
            and self.status == "available"
            and skill in self.skills
            and len(self.contacts) < self.capacity
        )

    def view(self) -> AgentView:
        return AgentView(
            self.agent_id,
            self.skills,
            self.capacity,
            self.status,
            self.connected,
            frozenset(self.contacts),
        )


@dataclass(slots=True)
class _Active:
    contact_id: str
    skill: str
    agent_id: str
    enqueued_at: float
    assigned_at: float


class _Ewma:
    """Exponentially weighted moving average; ``None`` until the first sample."""

    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, sample: float) -> None:
        sample = max(0.0, sample)
        self.value = (
            sample if self.value is None else self.value + self.alpha * (sample - self.value)
        )


def _check_capacity(capacity: int) -> None:
    if not 1 <= capacity <= MAX_CAPACITY:
        raise RoutingError(RoutingErrorCode.INVALID, f"capacity must be 1..{MAX_CAPACITY}")


class Router:
    """Skill queues plus agents; decides who serves whom. Not thread-safe (one event loop).

    Waiting-time estimate for a contact at position ``p`` (1-based, within its skill queue)::

        slots = Σ capacity of connected, available agents having the skill
        aht   = EWMA of recent handle times for the skill (default_handle_s before any)
        estimate = p × aht / slots                           if slots > 0
                 = max(EWMA of recent waits, p × aht)         if nobody serves the skill now

    rounded up to whole seconds and capped at ``max_estimate_s``. Multi-skill agents count
    fully for each of their skills, so the estimate is optimistic when skills share agents.
    """

    def __init__(
        self,
        skills: Iterable[str],
        *,
        rng: random.Random | None = None,
        prefer_least_loaded: bool = True,
        default_handle_s: float = 300.0,
        ewma_alpha: float = 0.2,
        max_estimate_s: int = 3600,
    ) -> None:
        self.skills = frozenset(skills)
        if not self.skills:
            raise ValueError("at least one skill is required")
        if not 0 < ewma_alpha <= 1:
            raise ValueError("ewma_alpha must be in (0, 1]")
        # Default: OS entropy, so nobody can reconstruct the sequence of choices.
        self._rng = rng if rng is not None else random.SystemRandom()
        self.prefer_least_loaded = prefer_least_loaded
        self.default_handle_s = default_handle_s
        self.max_estimate_s = max_estimate_s
        self._queued: dict[str, QueuedContact] = {}
        self._active: dict[str, _Active] = {}
        self._agents: dict[str, _Agent] = {}
        self._order = 0
        self._handle = {skill: _Ewma(ewma_alpha) for skill in self.skills}
        self._wait = {skill: _Ewma(ewma_alpha) for skill in self.skills}

    # ------------------------------------------------------------------ lookups

    def _check_skill(self, skill: str) -> None:
        if skill not in self.skills:
            raise RoutingError(RoutingErrorCode.UNKNOWN_SKILL, "unknown skill")

    def _agent(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise RoutingError(RoutingErrorCode.NOT_FOUND, "unknown agent")
        return agent

    def agent(self, agent_id: str) -> AgentView:
        return self._agent(agent_id).view()

    def agents(self) -> list[AgentView]:
        return [agent.view() for agent in self._agents.values()]

    def has_agent(self, agent_id: str) -> bool:
        """Whether the agent is registered (a look-up, where ``agents()`` builds every view:
        asking that per agent made 1,000 connections or a restart quadratic)."""
        return agent_id in self._agents

    def queued(self, skill: str | None = None) -> list[QueuedContact]:
        """Waiting contacts in service order (optionally of one skill)."""
        contacts = (c for c in self._queued.values() if skill is None or c.skill == skill)
        return sorted(contacts, key=lambda c: c.sort_key)

    def agent_of(self, contact_id: str) -> str | None:
        active = self._active.get(contact_id)
        return None if active is None else active.agent_id

    def is_queued(self, contact_id: str) -> bool:
        return contact_id in self._queued

    def handle_time_s(self, skill: str) -> float:
        """Moving average of handle times for ``skill`` (or the default)."""
        value = self._handle[skill].value
        return self.default_handle_s if value is None else value

    def wait_time_s(self, skill: str) -> float | None:
        """Moving average of queue waits for ``skill``, ``None`` before any assignment."""
        return self._wait[skill].value

    # ------------------------------------------------------------------ agents

    def add_agent(
        self,
        agent_id: str,
        skills: Iterable[str],
        capacity: int = 1,
        *,
        status: AgentStatusName = "away",
    ) -> None:
        """Register (or re-register on login) a connected agent; keeps current contacts."""
        skill_set = frozenset(skills)
        for skill in skill_set:
            self._check_skill(skill)
        _check_capacity(capacity)
        agent = self._agents.get(agent_id)
        if agent is None:
            self._agents[agent_id] = _Agent(agent_id, skill_set, capacity, status)
            return
        if capacity < len(agent.contacts):
            raise RoutingError(RoutingErrorCode.NO_CAPACITY, "capacity below current load")
        agent.skills, agent.capacity, agent.status = skill_set, capacity, status
        agent.connected, agent.disconnected_at = True, None

    def remove_agent(self, agent_id: str) -> list[Requeue]:
        """Agent logged off for good: their contacts go back to the head of their queues."""
        agent = self._agent(agent_id)
        requeued = self._requeue_all(agent)
        del self._agents[agent_id]
        return requeued

    def set_status(
        self, agent_id: str, status: AgentStatusName, capacity: int | None = None
    ) -> None:
        """``away`` stops new assignments but keeps current contacts.

        Lowering ``capacity`` below the current load is refused (``no_capacity``): an agent
        is never over capacity; they finish contacts first (or go away).
        """
        agent = self._agent(agent_id)
        if capacity is not None:
            _check_capacity(capacity)
            if capacity < len(agent.contacts):
                raise RoutingError(RoutingErrorCode.NO_CAPACITY, "capacity below current load")
            agent.capacity = capacity
        agent.status = status

    def agent_disconnected(self, agent_id: str, now: float) -> None:
        """Websocket lost: no new contacts; current ones are kept until the grace expires."""
        agent = self._agent(agent_id)
        if agent.connected:
            agent.connected = False
            agent.disconnected_at = now

    def agent_connected(self, agent_id: str) -> None:
        """Back within the grace period: keeps their contacts."""
        agent = self._agent(agent_id)
        agent.connected = True
        agent.disconnected_at = None

    def restore_assignment(
        self, agent_id: str, contact_id: str, skill: str, *, enqueued_at: float, now: float
    ) -> None:
        """After a server restart: the agent held this contact and has not reconnected yet.

        The agent counts as disconnected since ``now``; if they do not come back within
        the grace period, :meth:`tick` requeues the contact at the head of its queue.
        The database is the truth, so status and capacity are not checked here.
        """
        self._check_skill(skill)
        agent = self._agent(agent_id)
        if contact_id in self._queued or contact_id in self._active:
            raise RoutingError(RoutingErrorCode.DUPLICATE, "contact already routed")
        self._active[contact_id] = _Active(contact_id, skill, agent_id, enqueued_at, now)
        agent.contacts.add(contact_id)
        if agent.connected:
            agent.connected = False
            agent.disconnected_at = now

    def tick(self, now: float, grace_s: float) -> list[Requeue]:
        """Requeue contacts of agents disconnected for longer than ``grace_s``."""
        requeued: list[Requeue] = []
        for agent in self._agents.values():
            if (
                not agent.connected
                and agent.disconnected_at is not None
                and now - agent.disconnected_at > grace_s
                and agent.contacts
            ):
                logger.info(
                    "agent %s gone for %.0fs: requeueing %d contact(s)",
                    agent.agent_id,
                    now - agent.disconnected_at,
                    len(agent.contacts),
                )
                requeued.extend(self._requeue_all(agent))
        return requeued

    def _requeue_all(self, agent: _Agent) -> list[Requeue]:
        requeued = []
        for contact_id in sorted(agent.contacts, key=lambda c: self._active[c].enqueued_at):
            active = self._active.pop(contact_id)
            self._push(contact_id, active.skill, active.enqueued_at, priority=True)
            requeued.append(Requeue(contact_id, agent.agent_id, active.skill))
        agent.contacts.clear()
        return requeued

    # ------------------------------------------------------------------ contacts

    def _push(self, contact_id: str, skill: str, enqueued_at: float, *, priority: bool) -> None:
        self._order += 1
        self._queued[contact_id] = QueuedContact(
            contact_id, skill, enqueued_at, priority, self._order
        )

    def enqueue(self, contact_id: str, skill: str, now: float, *, priority: bool = False) -> None:
        """A new contact waits for ``skill``."""
        self._check_skill(skill)
        if contact_id in self._queued or contact_id in self._active:
            raise RoutingError(RoutingErrorCode.DUPLICATE, "contact already routed")
        self._push(contact_id, skill, now, priority=priority)

    def cancel(self, contact_id: str) -> bool:
        """Customer left (or the contact closed) while waiting; ``False`` if not queued."""
        return self._queued.pop(contact_id, None) is not None

    def release(self, agent_id: str, contact_id: str, now: float) -> None:
        """The contact closed: frees the agent's slot and records its handle time."""
        active = self._active.get(contact_id)
        if active is None or active.agent_id != agent_id:
            raise RoutingError(RoutingErrorCode.NOT_FOUND, "contact not held by this agent")
        del self._active[contact_id]
        self._agents[agent_id].contacts.discard(contact_id)
        self._handle[active.skill].add(now - active.assigned_at)

    def transfer(
        self,
        contact_id: str,
        *,
        by_agent: str,
        to_agent: str | None = None,
        to_skill: str | None = None,
        now: float,
    ) -> Assignment | None:
        """The holding agent hands a contact over.

        To an agent: only if that agent is connected, available and has spare capacity
        (skills are not required: a specialist may take it); returns the new assignment.
        To a skill: the contact goes to the head of that queue; returns ``None`` (call
        :meth:`assign`).
        """
        if (to_agent is None) == (to_skill is None):
            raise RoutingError(RoutingErrorCode.INVALID, "exactly one target is required")
        active = self._active.get(contact_id)
        if active is None:
            raise RoutingError(RoutingErrorCode.NOT_FOUND, "contact is not assigned")
        if active.agent_id != by_agent:
            raise RoutingError(RoutingErrorCode.FORBIDDEN, "only the holding agent can transfer")
        source = self._agents[by_agent]
        if to_agent is not None:
            if to_agent == by_agent:
                raise RoutingError(RoutingErrorCode.INVALID, "cannot transfer to oneself")
            target = self._agent(to_agent)
            if not target.connected or target.status != "available":
                raise RoutingError(RoutingErrorCode.UNAVAILABLE, "target agent is not available")
            if len(target.contacts) >= target.capacity:
                raise RoutingError(RoutingErrorCode.NO_CAPACITY, "target agent has no capacity")
            source.contacts.discard(contact_id)
            target.contacts.add(contact_id)
            active.agent_id = to_agent
            active.assigned_at = now
            return Assignment(contact_id, to_agent, active.skill, 0.0)
        assert to_skill is not None
        self._check_skill(to_skill)
        source.contacts.discard(contact_id)
        del self._active[contact_id]
        self._push(contact_id, to_skill, active.enqueued_at, priority=True)
        return None

    # ------------------------------------------------------------------ the routing

    def _pick(self, candidates: list[_Agent]) -> _Agent:
        if self.prefer_least_loaded:
            lowest = min(len(a.contacts) / a.capacity for a in candidates)
            candidates = [a for a in candidates if len(a.contacts) / a.capacity == lowest]
        candidates.sort(key=lambda a: a.agent_id)  # same seed → same choice
        return self._rng.choice(candidates)

    def assign(self, now: float) -> list[Assignment]:
        """Give waiting contacts to agents, oldest (priority first) first.

        Afterwards no waiting contact has an eligible agent (a contact whose skill has no
        free agent does not block contacts of other skills behind it).
        """
        assignments: list[Assignment] = []
        if not self._queued:
            return assignments
        for contact in self.queued():
            candidates = [a for a in self._agents.values() if a.eligible_for(contact.skill)]
            if not candidates:
                continue
            agent = self._pick(candidates)
            del self._queued[contact.contact_id]
            agent.contacts.add(contact.contact_id)
            self._active[contact.contact_id] = _Active(
                contact.contact_id, contact.skill, agent.agent_id, contact.enqueued_at, now
            )
            waited = max(0.0, now - contact.enqueued_at)
            if not contact.priority:
                self._wait[contact.skill].add(waited)
            assignments.append(
                Assignment(contact.contact_id, agent.agent_id, contact.skill, waited)
            )
        return assignments

    def position(self, contact_id: str) -> int:
        """1-based place of a waiting contact in its skill queue (service order)."""
        contact = self._queued.get(contact_id)
        if contact is None:
            raise RoutingError(RoutingErrorCode.NOT_FOUND, "contact is not queued")
        key = contact.sort_key
        return 1 + sum(
            1 for c in self._queued.values() if c.skill == contact.skill and c.sort_key < key
        )

    def estimated_wait_s(self, contact_id: str) -> int:
        """Estimated seconds until assignment (formula in the class docstring)."""
        position = self.position(contact_id)
        skill = self._queued[contact_id].skill
        aht = self.handle_time_s(skill)
        slots = sum(
            a.capacity
            for a in self._agents.values()
            if a.connected and a.status == "available" and skill in a.skills
        )
        if slots > 0:
            estimate = position * aht / slots
        else:
            estimate = max(self._wait[skill].value or 0.0, position * aht)
        return min(self.max_estimate_s, math.ceil(estimate))
