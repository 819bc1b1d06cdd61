"""Random sequences of arrivals, agent status/connection changes, transfers and closes keep
the router's invariants: nobody over capacity, no contact in two places, and after
assign() no waiting contact has an eligible agent."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vbank.contact import AgentStatusName, Router, RoutingError

SKILLS = ("accounts", "cards", "wealth")
AGENTS = ("a1", "a2", "a3", "a4")
GRACE_S = 30.0

skill_sets = st.frozensets(st.sampled_from(SKILLS), min_size=1)


class RouterMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32 - 1), least_loaded=st.booleans())
    def setup(self, seed: int, least_loaded: bool) -> None:
        self.router = Router(SKILLS, rng=random.Random(seed), prefer_least_loaded=least_loaded)
        self.now = 0.0
        self.next_contact = 0
        self.known: set[str] = set()  # contacts enqueued and not yet finished
        self.closed: set[str] = set()

    def _assigned(self) -> dict[str, str]:
        return {c: a.agent_id for a in self.router.agents() for c in a.contacts}

    @rule(dt=st.floats(0, 20))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(skill=st.sampled_from(SKILLS), priority=st.booleans())
    def arrival(self, skill: str, priority: bool) -> None:
        contact_id = f"c{self.next_contact}"
        self.next_contact += 1
        self.router.enqueue(contact_id, skill, self.now, priority=priority)
        self.known.add(contact_id)

    @rule(
        agent_id=st.sampled_from(AGENTS),
        skills=skill_sets,
        capacity=st.integers(1, 3),
        available=st.booleans(),
    )
    def login(self, agent_id: str, skills: frozenset[str], capacity: int, available: bool) -> None:
        status: AgentStatusName = "available" if available else "away"
        try:
            self.router.add_agent(agent_id, skills, capacity=capacity, status=status)
        except RoutingError:  # capacity below current load on re-login
            pass

    @rule(agent_id=st.sampled_from(AGENTS), available=st.booleans(), capacity=st.integers(1, 3))
    def set_status(self, agent_id: str, available: bool, capacity: int) -> None:
        try:
            self.router.set_status(agent_id, "available" if available else "away", capacity)
        except RoutingError:
            pass

    @rule(agent_id=st.sampled_from(AGENTS), connect=st.booleans())
    def connection(self, agent_id: str, connect: bool) -> None:
        try:
            if connect:
                self.router.agent_connected(agent_id)
            else:
                self.router.agent_disconnected(agent_id, self.now)
        except RoutingError:
            pass

    @rule()
    def tick(self) -> None:
        before = self._assigned()
        for requeue in self.router.tick(self.now, GRACE_S):
            assert before[requeue.contact_id] == requeue.agent_id
            assert self.router.is_queued(requeue.contact_id)

    @rule(agent_id=st.sampled_from(AGENTS))
    def logoff(self, agent_id: str) -> None:
        try:
            self.router.remove_agent(agent_id)
        except RoutingError:
            pass

    @rule()
    def assign(self) -> None:
        before = self._assigned()
        loads = {a.agent_id: a.load for a in self.router.agents()}
        assignments = self.router.assign(self.now)
        assert len({a.contact_id for a in assignments}) == len(assignments)
        for assignment in assignments:
            assert assignment.contact_id not in before, "contact assigned twice"
            loads[assignment.agent_id] += 1
        # Nothing eligible left behind.
        for contact in self.router.queued():
            for view in self.router.agents():
                eligible = (
                    view.connected
                    and view.status == "available"
                    and contact.skill in view.skills
                    and view.load < view.capacity
                )
                assert not eligible, f"{contact.contact_id} left waiting for {view.agent_id}"
        assert {a.agent_id: a.load for a in self.router.agents()} == loads

    @precondition(lambda self: bool(self._assigned()))
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        assigned = self._assigned()
        contact_id = data.draw(st.sampled_from(sorted(assigned)))
        self.router.release(assigned[contact_id], contact_id, self.now)
        self.known.discard(contact_id)
        self.closed.add(contact_id)

    @precondition(lambda self: bool(self._assigned()))
    @rule(data=st.data(), to_agent=st.sampled_from((None, *AGENTS)), skill=st.sampled_from(SKILLS))
    def transfer(self, data: st.DataObject, to_agent: str | None, skill: str) -> None:
        assigned = self._assigned()
        contact_id = data.draw(st.sampled_from(sorted(assigned)))
        try:
            self.router.transfer(
                contact_id,
                by_agent=assigned[contact_id],
                to_agent=to_agent,
                to_skill=skill if to_agent is None else None,
                now=self.now,
            )
        except RoutingError:
            assert self._assigned() == assigned

    @rule(data=st.data())
    def abandon(self, data: st.DataObject) -> None:
        queued = [c.contact_id for c in self.router.queued()]
        if queued:
            contact_id = data.draw(st.sampled_from(queued))
            assert self.router.cancel(contact_id)
            self.known.discard(contact_id)

    @invariant()
    def nobody_over_capacity(self) -> None:
        for view in self.router.agents():
            assert view.load <= view.capacity

    @invariant()
    def every_contact_in_exactly_one_place(self) -> None:
        queued = [c.contact_id for c in self.router.queued()]
        assigned = [c for a in self.router.agents() for c in a.contacts]
        assert len(set(queued)) == len(queued)
        assert len(set(assigned)) == len(assigned), "contact held by two agents"
        assert not set(queued) & set(assigned)
        assert set(queued) | set(assigned) == self.known
        for contact_id in assigned:
            assert self.router.agent(self.router.agent_of(contact_id) or "").load >= 1

    @invariant()
    def positions_are_a_permutation(self) -> None:
        for skill in SKILLS:
            queue = self.router.queued(skill)
            assert [self.router.position(c.contact_id) for c in queue] == list(
                range(1, len(queue) + 1)
            )
            for contact in queue:
                assert 0 <= self.router.estimated_wait_s(contact.contact_id) <= 3600


RouterMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
TestRouterMachine = RouterMachine.TestCase
