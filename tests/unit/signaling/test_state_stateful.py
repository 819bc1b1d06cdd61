"""Random event sequences against ContactSession, checked against an independent model of
the consent rule: video is never live without the customer's consent for the current
attempt, rejected events change nothing, and closed is terminal."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from signaling.protocol import ProtocolError, Role
from signaling.state import ContactSession, Transition, VideoChanged

CONSENT = "v1"
roles = st.sampled_from(["customer", "agent"])


class ContactMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.session = ContactSession("c1", "accounts", consent_version=CONSENT)
        # Independent bookkeeping, derived only from accepted events and their effects.
        self.attempt_started = 0  # attempts started (request from none/ended)
        self.consent_for_attempt: int | None = None
        self.was_closed = False

    def apply(self, event: Callable[[], Transition]) -> Transition | None:
        s = self.session
        before = (s.state, s.video, s.agent_id, s.attempt, s.consented_attempt, s.legs)
        try:
            result = event()
        except ProtocolError:
            after = (s.state, s.video, s.agent_id, s.attempt, s.consented_attempt, s.legs)
            assert after == before, "rejected event changed the session"
            return None
        assert not self.was_closed, "an event was accepted after close"
        assert (result.contact, result.video) == (s.state, s.video)
        changes = [e.state for e in result.effects if isinstance(e, VideoChanged)]
        if changes:
            assert changes[-1] == s.video, "last VideoChanged effect must match the state"
        return result

    @rule(agent=st.sampled_from(["a1", "a2"]))
    def assign(self, agent: str) -> None:
        self.apply(lambda: self.session.assign(agent))

    @rule(by=roles)
    def request_video(self, by: Role) -> None:
        video_before = self.session.video
        if self.apply(lambda: self.session.request_video(by)) and video_before in ("none", "ended"):
            self.attempt_started += 1

    @rule(by=roles, accept=st.booleans(), version=st.sampled_from([CONSENT, CONSENT, "old"]))
    def consent(self, by: Role, accept: bool, version: str) -> None:
        result = self.apply(lambda: self.session.consent(by, accept, version))
        if result is not None:
            assert by == "customer" and version == CONSENT
            if accept:
                self.consent_for_attempt = self.attempt_started

    @rule(by=roles)
    def offer(self, by: Role) -> None:
        if self.apply(lambda: self.session.offer(by)) is not None:
            assert self.consent_for_attempt == self.attempt_started, "offer without consent"

    @rule(role=roles)
    def answered(self, role: Role) -> None:
        self.apply(lambda: self.session.answered(role))

    @rule()
    def ice_failed(self) -> None:
        self.apply(self.session.ice_failed)

    @rule(by=roles)
    def hangup(self, by: Role) -> None:
        self.apply(lambda: self.session.hangup(by))

    @rule(role=roles)
    def disconnect(self, role: Role) -> None:
        self.apply(lambda: self.session.disconnect(role))

    @rule(role=roles)
    def reconnect(self, role: Role) -> None:
        self.apply(lambda: self.session.reconnect(role))

    @rule(by=roles, to_agent=st.sampled_from([None, "a1", "a2"]))
    def transfer(self, by: Role, to_agent: str | None) -> None:
        if to_agent is None:
            self.apply(lambda: self.session.transfer(by, to_skill="cards"))
        else:
            self.apply(lambda: self.session.transfer(by, to_agent_id=to_agent))

    @rule()
    def requeue(self) -> None:
        self.apply(self.session.requeue)

    @rule(dice=st.integers(0, 9))
    def close(self, dice: int) -> None:
        if dice == 0 and self.apply(self.session.close) is not None:  # rare: it is terminal
            self.was_closed = True

    @rule(data=st.data(), steps=st.integers(1, 8))
    def progress(self, data: st.DataObject, steps: int) -> None:
        """Take up to ``steps`` steps towards live video, so deep states get explored."""
        for _ in range(steps):
            s = self.session
            if s.state == "queued":
                self.assign("a1")
            elif s.state == "closed" or s.video == "live":
                return
            elif s.video in ("none", "ended"):
                self.request_video(data.draw(roles))
            elif s.video == "requested":
                self.request_video("agent")
            elif s.video == "consent_pending":
                self.consent("customer", data.draw(st.booleans()), CONSENT)
            else:  # consented, negotiating
                idle = [r for r, leg in s.legs.items() if leg == "idle"]
                offered = [r for r, leg in s.legs.items() if leg == "offered"]
                if idle and (not offered or data.draw(st.booleans())):
                    self.offer(data.draw(st.sampled_from(idle)))
                else:
                    self.answered(data.draw(st.sampled_from(offered)))

    @invariant()
    def never_live_without_consent_for_this_attempt(self) -> None:
        if self.session.video in ("consented", "negotiating", "live"):
            assert self.consent_for_attempt == self.attempt_started
            assert self.session.consented_attempt == self.session.attempt
        if self.session.video == "live":
            assert all(leg == "answered" for leg in self.session.legs.values())

    @invariant()
    def closed_is_terminal(self) -> None:
        assert (self.session.state == "closed") == self.was_closed

    @invariant()
    def contact_and_video_are_consistent(self) -> None:
        s = self.session
        if s.state == "queued":
            assert s.video == "none" and s.agent_id is None
        if s.state == "assigned":
            assert s.agent_id is not None
        assert s.attempt == self.attempt_started


ContactMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestContactMachine = ContactMachine.TestCase
