"""The contact/video state machine: an exhaustive state × event table plus the effects
that matter (consent, audit, teardown order)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from signaling.protocol import ErrorCode, ProtocolError
from signaling.state import (
    Assigned,
    Closed,
    ConsentRecorded,
    ConsentRequired,
    ContactSession,
    OfferAccepted,
    PresenceChanged,
    Requeued,
    Transferred,
    Transition,
    VideoChanged,
    VideoRequestedBy,
    VideoStopped,
)

CONSENT = "v3"
Step = Callable[[ContactSession], Transition]


def new_session() -> ContactSession:
    return ContactSession("c1", "accounts", consent_version=CONSENT)


# Paths from a fresh session to one representative of every state.
ASSIGN: list[Step] = [lambda s: s.assign("a1")]
CONSENTED: list[Step] = [
    *ASSIGN,
    lambda s: s.request_video("agent"),
    lambda s: s.consent("customer", True, CONSENT),
]
LIVE: list[Step] = [
    *CONSENTED,
    lambda s: s.offer("customer"),
    lambda s: s.offer("agent"),
    lambda s: s.answered("customer"),
    lambda s: s.answered("agent"),
]
STATES: dict[str, list[Step]] = {
    "queued": [],
    "none": ASSIGN,
    "requested": [*ASSIGN, lambda s: s.request_video("customer")],
    "consent_pending": [*ASSIGN, lambda s: s.request_video("agent")],
    "consented": CONSENTED,
    "negotiating": [*CONSENTED, lambda s: s.offer("customer")],
    "live": LIVE,
    "ended": [*LIVE, lambda s: s.hangup("agent")],
    "closed": [lambda s: s.close()],
}

EVENTS: dict[str, Step] = {
    "assign": lambda s: s.assign("a2"),
    "request(customer)": lambda s: s.request_video("customer"),
    "request(agent)": lambda s: s.request_video("agent"),
    "consent(customer, yes)": lambda s: s.consent("customer", True, CONSENT),
    "consent(customer, no)": lambda s: s.consent("customer", False, CONSENT),
    "consent(customer, stale version)": lambda s: s.consent("customer", True, "v2"),
    "consent(agent)": lambda s: s.consent("agent", True, CONSENT),
    "offer(customer)": lambda s: s.offer("customer"),
    "offer(agent)": lambda s: s.offer("agent"),
    "answered(customer)": lambda s: s.answered("customer"),
    "answered(agent)": lambda s: s.answered("agent"),
    "ice_failed": lambda s: s.ice_failed(),
    "hangup(customer)": lambda s: s.hangup("customer"),
    "hangup(agent)": lambda s: s.hangup("agent"),
    "disconnect(customer)": lambda s: s.disconnect("customer"),
    "disconnect(agent)": lambda s: s.disconnect("agent"),
    "reconnect(agent)": lambda s: s.reconnect("agent"),
    "close": lambda s: s.close("agent"),
    "transfer(to agent)": lambda s: s.transfer("agent", to_agent_id="a2"),
    "transfer(to skill)": lambda s: s.transfer("agent", to_skill="cards"),
    "transfer(by customer)": lambda s: s.transfer("customer", to_skill="cards"),
    "requeue": lambda s: s.requeue(),
}

OOO = ErrorCode.OUT_OF_ORDER
FORBID = ErrorCode.FORBIDDEN
INVALID = ErrorCode.INVALID_MESSAGE
Outcome = tuple[str, str] | ErrorCode
Q, CL = "queued", "closed"
A = "assigned"


def row(video: str, overrides: dict[str, Outcome]) -> dict[str, Outcome]:
    """Outcomes common to every assigned state (video ``video``), with overrides."""
    base: dict[str, Outcome] = {
        "assign": OOO,
        "request(customer)": OOO,
        "request(agent)": OOO,
        "consent(customer, yes)": OOO,
        "consent(customer, no)": OOO,
        "consent(customer, stale version)": OOO,
        "consent(agent)": FORBID,
        "offer(customer)": OOO,
        "offer(agent)": OOO,
        "answered(customer)": OOO,
        "answered(agent)": OOO,
        "ice_failed": OOO,
        "hangup(customer)": (A, "ended"),
        "hangup(agent)": (A, "ended"),
        "disconnect(customer)": (A, "ended"),
        "disconnect(agent)": (A, "ended"),
        "reconnect(agent)": (A, video),
        "close": (CL, "ended"),
        "transfer(to agent)": (A, "none"),
        "transfer(to skill)": (Q, "none"),
        "transfer(by customer)": FORBID,
        "requeue": (Q, "none"),
    }
    assert set(overrides) <= set(base)
    return base | overrides


# none and ended: nothing to hang up, a request starts a new attempt.
NO_VIDEO: dict[str, Outcome] = {
    "request(customer)": (A, "requested"),
    "request(agent)": (A, "consent_pending"),
    "hangup(customer)": OOO,
    "hangup(agent)": OOO,
}

# The specification: state → event → (contact state, video state) or the error raised.
TABLE: dict[str, dict[str, Outcome]] = {
    "queued": {
        **{event: OOO for event in EVENTS},
        "assign": (A, "none"),
        "consent(agent)": FORBID,
        "transfer(by customer)": FORBID,
        "disconnect(customer)": (Q, "none"),
        "disconnect(agent)": (Q, "none"),
        "reconnect(agent)": (Q, "none"),
        "close": (CL, "none"),
    },
    "none": row(
        "none",
        {
            **NO_VIDEO,
            "disconnect(customer)": (A, "none"),
            "disconnect(agent)": (A, "none"),
            "close": (CL, "none"),
        },
    ),
    "requested": row("requested", {"request(agent)": (A, "consent_pending")}),
    "consent_pending": row(
        "consent_pending",
        {
            "consent(customer, yes)": (A, "consented"),
            "consent(customer, no)": (A, "none"),
            "consent(customer, stale version)": INVALID,
        },
    ),
    "consented": row(
        "consented",
        {"offer(customer)": (A, "negotiating"), "offer(agent)": (A, "negotiating")},
    ),
    "negotiating": row(  # the customer has offered, the agent not yet
        "negotiating",
        {
            "offer(agent)": (A, "negotiating"),
            "answered(customer)": (A, "negotiating"),
            "ice_failed": (A, "ended"),
        },
    ),
    "live": row("live", {"ice_failed": (A, "ended")}),
    "ended": row("ended", NO_VIDEO),
    "closed": {event: OOO for event in EVENTS},
}


def session_in(state: str) -> ContactSession:
    session = new_session()
    for step in STATES[state]:
        step(session)
    expected_video = "none" if state in ("queued", "closed") else state
    assert session.video == expected_video
    return session


def snapshot(s: ContactSession) -> tuple[object, ...]:
    return (
        s.state,
        s.video,
        s.agent_id,
        s.skill,
        s.attempt,
        s.consented_attempt,
        s.legs,
        s.online("customer"),
        s.online("agent"),
    )


def test_table_is_exhaustive() -> None:
    assert set(TABLE) == set(STATES)
    for state, outcomes in TABLE.items():
        assert set(outcomes) == set(EVENTS), state


@pytest.mark.parametrize("event", sorted(EVENTS))
@pytest.mark.parametrize("state", list(STATES))
def test_transition_table(state: str, event: str) -> None:
    session = session_in(state)
    expected = TABLE[state][event]
    if isinstance(expected, ErrorCode):
        before = snapshot(session)
        with pytest.raises(ProtocolError) as info:
            EVENTS[event](session)
        assert info.value.code is expected
        assert snapshot(session) == before, "a rejected event must not change anything"
    else:
        result = EVENTS[event](session)
        assert (result.contact, result.video) == expected
        assert (session.state, session.video) == expected


# ------------------------------------------------------------------ effects and rules


def test_agent_request_asks_the_customer_for_consent() -> None:
    session = session_in("none")
    result = session.request_video("agent")
    assert result.effects == (
        VideoRequestedBy("agent"),
        ConsentRequired(CONSENT),
        VideoChanged("consent_pending"),
    )


def test_customer_request_waits_for_the_agent_then_asks_consent() -> None:
    session = session_in("none")
    assert session.request_video("customer").effects == (
        VideoRequestedBy("customer"),
        VideoChanged("requested"),
    )
    assert session.request_video("agent").effects == (
        ConsentRequired(CONSENT),
        VideoChanged("consent_pending"),
    )


def test_consent_is_recorded_for_the_audit_trail() -> None:
    session = session_in("consent_pending")
    assert session.consent("customer", True, CONSENT).effects == (
        ConsentRecorded(attempt=1, consent_version=CONSENT, accepted=True),
        VideoChanged("consented"),
    )


def test_declining_returns_to_chat_and_video_can_be_asked_again() -> None:
    session = session_in("consent_pending")
    assert session.consent("customer", False, CONSENT).effects == (
        ConsentRecorded(attempt=1, consent_version=CONSENT, accepted=False),
        VideoStopped("declined"),
        VideoChanged("none"),
    )
    assert session.state == "assigned"
    session.request_video("agent")
    assert session.video == "consent_pending" and session.attempt == 2


def test_customer_cannot_offer_before_consent() -> None:
    for state in ("none", "requested", "consent_pending"):
        session = session_in(state)
        with pytest.raises(ProtocolError) as info:
            session.offer("customer")
        assert info.value.code is ErrorCode.OUT_OF_ORDER


def test_agent_cannot_consent_for_the_customer() -> None:
    session = session_in("consent_pending")
    with pytest.raises(ProtocolError) as info:
        session.consent("agent", True, CONSENT)
    assert info.value.code is ErrorCode.FORBIDDEN
    assert session.video == "consent_pending" and session.consented_attempt is None


def test_offers_are_handed_to_the_media_layer_and_live_needs_every_leg() -> None:
    session = session_in("consented")
    assert session.offer("agent").effects == (OfferAccepted("agent"), VideoChanged("negotiating"))
    assert session.answered("agent").effects == ()
    assert session.offer("customer").effects == (OfferAccepted("customer"),)
    assert session.answered("customer").effects == (VideoChanged("live"),)
    assert session.legs == {"customer": "answered", "agent": "answered"}


def test_single_leg_configuration_goes_live_on_one_answer() -> None:
    session = ContactSession("c1", "cards", consent_version=CONSENT, video_legs=["customer"])
    session.assign("a1")
    session.request_video("agent")
    session.consent("customer", True, CONSENT)
    session.offer("customer")
    assert session.answered("customer").video == "live"
    with pytest.raises(ProtocolError):
        session.offer("agent")  # not a configured leg
    with pytest.raises(ValueError):
        ContactSession("c2", "cards", consent_version=CONSENT, video_legs=[])


def test_restart_after_end_needs_a_new_consent() -> None:
    session = session_in("ended")
    assert session.consented_attempt == 1
    session.request_video("customer")
    session.request_video("agent")
    assert session.attempt == 2 and session.consented_attempt == 1
    with pytest.raises(ProtocolError):
        session.offer("customer")
    session.consent("customer", True, CONSENT)
    for step in LIVE[-4:]:
        step(session)
    assert session.video == "live" and session.consented_attempt == 2


def test_close_ends_video_first() -> None:
    session = session_in("live")
    assert session.close("customer").effects == (
        VideoStopped("closed"),
        VideoChanged("ended"),
        Closed("customer"),
    )
    for event in EVENTS.values():
        with pytest.raises(ProtocolError):
            event(session)
    assert session.state == "closed"


def test_ice_failure_ends_the_attempt() -> None:
    session = session_in("live")
    assert session.ice_failed().effects == (VideoStopped("ice_failed"), VideoChanged("ended"))
    assert session.legs == {"customer": "idle", "agent": "idle"}


def test_disconnect_ends_video_and_tells_the_other_side() -> None:
    session = session_in("live")
    assert session.disconnect("customer").effects == (
        PresenceChanged("customer", False),
        VideoStopped("disconnect"),
        VideoChanged("ended"),
    )
    assert session.disconnect("customer").effects == ()  # already offline
    assert session.reconnect("customer").effects == (PresenceChanged("customer", True),)
    assert session.reconnect("customer").effects == ()
    assert session.state == "assigned"


def test_transfer_to_agent_ends_video_and_resets_for_the_new_agent() -> None:
    session = session_in("live")
    assert session.transfer("agent", to_agent_id="a2").effects == (
        VideoStopped("transfer"),
        VideoChanged("none"),
        Transferred("a1", "a2"),
    )
    assert session.agent_id == "a2"
    with pytest.raises(ProtocolError) as info:
        session.transfer("agent", to_agent_id="a2")
    assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_transfer_to_skill_requeues_under_the_new_skill() -> None:
    session = session_in("none")
    assert session.transfer("agent", to_skill="wealth").effects == (Requeued("wealth"),)
    assert (session.state, session.skill, session.agent_id) == ("queued", "wealth", None)
    assert session.assign("a9").effects == (Assigned("a9"),)


@pytest.mark.parametrize(
    "targets", [{}, {"to_agent_id": "a2", "to_skill": "cards"}], ids=["none", "both"]
)
def test_transfer_needs_exactly_one_target(targets: dict[str, str]) -> None:
    session = session_in("none")
    with pytest.raises(ProtocolError) as info:
        session.transfer("agent", **targets)
    assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_requeue_after_agent_loss() -> None:
    session = session_in("negotiating")
    assert session.requeue().effects == (
        VideoStopped("disconnect"),
        VideoChanged("none"),
        Requeued("accounts"),
    )
    assert session.agent_id is None and session.state == "queued"
