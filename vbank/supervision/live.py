"""The live half of the dashboard: queue lengths, longest waits and agent states, taken
from the router's in-memory snapshot (the router is the only place that knows who is
waiting and who is connected right now).

Pure: the caller passes the router's views, the agents' directory rows and the clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vbank.contact.routing import AgentView, QueuedContact

AgentState = Literal["available", "away", "offline"]


@dataclass(frozen=True, slots=True)
class AgentEntry:
    """An agent as the users table knows them (the display name, never a customer's)."""

    user_id: int
    display_name: str
    skills: frozenset[str]
    capacity: int


def _seconds(value: float | None) -> int | None:
    return None if value is None else max(0, math.floor(value))


def queue_cards(
    skills: Sequence[str],
    queued: Iterable[QueuedContact],
    agents: Iterable[AgentView],
    *,
    now: float,
    avg_wait_s: Callable[[str], float | None],
) -> list[dict[str, Any]]:
    """One card per skill: waiting contacts, the longest current wait (whole seconds, from
    the original arrival, so a requeued contact keeps its age), the recent average wait and
    the agents who could take a contact of that skill now."""
    oldest: dict[str, float] = {}
    length: dict[str, int] = dict.fromkeys(skills, 0)
    for c in queued:
        length[c.skill] = length.get(c.skill, 0) + 1
        oldest[c.skill] = min(oldest.get(c.skill, c.enqueued_at), c.enqueued_at)
    ready = [a for a in agents if a.connected and a.status == "available"]
    cards: list[dict[str, Any]] = []
    for skill in skills:
        serving = [a for a in ready if skill in a.skills]
        cards.append(
            {
                "skill": skill,
                "queued": length.get(skill, 0),
                "longest_wait_s": _seconds(now - oldest[skill]) if skill in oldest else None,
                "avg_wait_s": _seconds(avg_wait_s(skill)),
                "agents_available": len(serving),
                "free_slots": sum(max(0, a.capacity - a.load) for a in serving),
            }
        )
    return cards


def agent_rows(directory: Iterable[AgentEntry], live: Iterable[AgentView]) -> list[dict[str, Any]]:
    """Every agent of the directory, with the router's state when they are connected.

    An agent the router knows but who lost their socket is ``offline`` while still holding
    contacts (the grace period), so their current contacts are shown too.
    """
    views = {a.agent_id: a for a in live}
    rows: list[dict[str, Any]] = []
    for entry in directory:
        view = views.get(str(entry.user_id))
        state: AgentState = "offline"
        if view is not None and view.connected:
            state = view.status
        rows.append(
            {
                "agent_id": entry.user_id,
                "name": entry.display_name,
                "state": state,
                "skills": sorted(view.skills if view is not None else entry.skills),
                "load": 0 if view is None else view.load,
                "capacity": entry.capacity if view is None else view.capacity,
            }
        )
    order = {"available": 0, "away": 1, "offline": 2}
    rows.sort(key=lambda r: (order[r["state"]], r["name"].casefold(), r["agent_id"]))
    return rows
