"""Skill routing: fairness, capacity, random agent choice, transfers, disconnect grace and
wait estimates."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from vbank.contact import Assignment, Requeue, Router, RoutingError, RoutingErrorCode

SKILLS = ("accounts", "cards", "wealth")


def make_router(seed: int = 1, **kwargs: object) -> Router:
    return Router(SKILLS, rng=random.Random(seed), **kwargs)  # type: ignore[arg-type]


def agent(router: Router, agent_id: str, *skills: str, capacity: int = 1) -> None:
    router.add_agent(agent_id, skills or SKILLS, capacity=capacity, status="available")


def code_of(exc: pytest.ExceptionInfo[RoutingError]) -> RoutingErrorCode:
    return exc.value.code


# ------------------------------------------------------------------ fairness


def test_fifo_within_a_skill() -> None:
    router = make_router()
    for i in range(5):
        router.enqueue(f"c{i}", "cards", now=float(i))
    agent(router, "a1", "cards")
    served = []
    for t in range(5):
        [assignment] = router.assign(now=10.0 + t)
        served.append(assignment.contact_id)
        router.release("a1", assignment.contact_id, now=20.0 + t)
    assert served == ["c0", "c1", "c2", "c3", "c4"]


def test_oldest_contact_first_across_the_agents_skills() -> None:
    router = make_router()
    router.enqueue("new-cards", "cards", now=5.0)
    router.enqueue("old-wealth", "wealth", now=1.0)
    router.enqueue("mid-accounts", "accounts", now=3.0)
    agent(router, "a1", "cards", "wealth")
    [first] = router.assign(now=10.0)
    assert first.contact_id == "old-wealth"
    router.release("a1", "old-wealth", now=11.0)
    [second] = router.assign(now=12.0)
    assert second.contact_id == "new-cards"  # mid-accounts: a1 lacks the skill
    assert router.queued() == [router.queued("accounts")[0]]


def test_waiting_contact_without_agent_does_not_block_others() -> None:
    router = make_router()
    router.enqueue("w", "wealth", now=0.0)
    router.enqueue("c", "cards", now=1.0)
    agent(router, "a1", "cards")
    assert [a.contact_id for a in router.assign(now=2.0)] == ["c"]
    assert router.is_queued("w")


def test_requeued_contacts_go_to_the_head() -> None:
    router = make_router()
    agent(router, "a1", "cards")
    router.add_agent("a2", ["cards", "wealth"], status="away")
    router.enqueue("older-wealth", "wealth", now=0.0)  # nobody serves wealth yet
    router.enqueue("early", "cards", now=1.0)
    router.assign(now=1.0)
    router.enqueue("waiting", "cards", now=2.0)
    router.agent_disconnected("a1", now=3.0)
    assert router.tick(now=100.0, grace_s=30) == [Requeue("early", "a1", "cards")]
    router.enqueue("later", "cards", now=101.0)
    assert [c.contact_id for c in router.queued("cards")] == ["early", "waiting", "later"]
    assert router.position("early") == 1
    # Ahead even of an older contact of another skill.
    router.set_status("a2", "available")
    assert [a.contact_id for a in router.assign(now=102.0)] == ["early"]


def test_priority_contacts_beat_older_normal_contacts() -> None:
    router = make_router()
    router.enqueue("old", "accounts", now=0.0)
    router.enqueue("vip-requeue", "accounts", now=50.0, priority=True)
    agent(router, "a1", "accounts")
    [assignment] = router.assign(now=60.0)
    assert assignment.contact_id == "vip-requeue"


# ------------------------------------------------------------------ capacity & status


def test_capacity_is_respected() -> None:
    router = make_router()
    agent(router, "a1", "cards", capacity=2)
    for i in range(4):
        router.enqueue(f"c{i}", "cards", now=float(i))
    assert [a.contact_id for a in router.assign(now=10.0)] == ["c0", "c1"]
    assert router.agent("a1").load == 2
    assert router.assign(now=11.0) == []
    router.release("a1", "c0", now=12.0)
    assert [a.contact_id for a in router.assign(now=13.0)] == ["c2"]


def test_away_and_disconnected_agents_get_nothing_new_but_keep_contacts() -> None:
    router = make_router()
    agent(router, "a1", "cards", capacity=3)
    router.enqueue("c0", "cards", now=0.0)
    router.assign(now=1.0)
    router.set_status("a1", "away")
    router.enqueue("c1", "cards", now=2.0)
    assert router.assign(now=3.0) == []
    router.set_status("a1", "available")
    router.agent_disconnected("a1", now=4.0)
    assert router.assign(now=5.0) == []
    assert router.agent("a1").contacts == {"c0"}
    router.agent_connected("a1")
    assert [a.contact_id for a in router.assign(now=6.0)] == ["c1"]


def test_new_agents_start_away() -> None:
    router = make_router()
    router.add_agent("a1", ["cards"])
    router.enqueue("c", "cards", now=0.0)
    assert router.assign(now=1.0) == []


def test_capacity_cannot_drop_below_current_load() -> None:
    router = make_router()
    agent(router, "a1", "cards", capacity=3)
    for i in range(2):
        router.enqueue(f"c{i}", "cards", now=0.0)
    router.assign(now=1.0)
    with pytest.raises(RoutingError) as exc:
        router.set_status("a1", "available", capacity=1)
    assert code_of(exc) is RoutingErrorCode.NO_CAPACITY
    assert router.agent("a1").capacity == 3
    router.set_status("a1", "available", capacity=2)
    assert router.agent("a1").capacity == 2


@pytest.mark.parametrize("capacity", [0, 11])
def test_capacity_bounds(capacity: int) -> None:
    with pytest.raises(RoutingError):
        make_router().add_agent("a1", ["cards"], capacity=capacity)


def test_unknown_skills_and_duplicates() -> None:
    router = make_router()
    with pytest.raises(RoutingError) as exc:
        router.enqueue("c", "loans", now=0.0)
    assert code_of(exc) is RoutingErrorCode.UNKNOWN_SKILL
    with pytest.raises(RoutingError):
        router.add_agent("a1", ["loans"])
    router.enqueue("c", "cards", now=0.0)
    with pytest.raises(RoutingError) as exc:
        router.enqueue("c", "accounts", now=1.0)
    assert code_of(exc) is RoutingErrorCode.DUPLICATE


def test_cancel_and_release_errors() -> None:
    router = make_router()
    router.enqueue("c", "cards", now=0.0)
    assert router.cancel("c") and not router.cancel("c")
    with pytest.raises(RoutingError) as exc:
        router.release("a1", "c", now=1.0)
    assert code_of(exc) is RoutingErrorCode.NOT_FOUND
    agent(router, "a1", "cards")
    agent(router, "a2", "cards")
    router.enqueue("d", "cards", now=2.0)
    [assignment] = router.assign(now=3.0)
    other = "a2" if assignment.agent_id == "a1" else "a1"
    with pytest.raises(RoutingError):
        router.release(other, "d", now=4.0)  # not theirs


# ------------------------------------------------------------------ random agent choice


def test_each_eligible_agent_is_chosen_about_equally() -> None:
    router = make_router(seed=20240601)
    agents = [f"a{i}" for i in range(5)]
    for agent_id in agents:
        agent(router, agent_id, "cards")
    rounds = 5000
    counts: Counter[str] = Counter()
    for i in range(rounds):
        router.enqueue(f"c{i}", "cards", now=float(i))
        [assignment] = router.assign(now=float(i))
        counts[assignment.agent_id] += 1
        router.release(assignment.agent_id, assignment.contact_id, now=i + 0.5)
    expected = rounds / len(agents)
    chi2 = sum((counts[a] - expected) ** 2 / expected for a in agents)
    assert set(counts) == set(agents)
    assert chi2 < 18.47  # chi-square, 4 degrees of freedom, p = 0.001


def test_choice_depends_on_the_rng_not_on_agent_order() -> None:
    picks = set()
    for seed in range(30):
        router = make_router(seed=seed)
        for agent_id in ("a1", "a2", "a3"):
            agent(router, agent_id, "cards")
        router.enqueue("c", "cards", now=0.0)
        picks.add(router.assign(now=1.0)[0].agent_id)
    assert picks == {"a1", "a2", "a3"}


def test_same_seed_same_choices() -> None:
    def run(seed: int) -> list[str]:
        router = make_router(seed=seed)
        for agent_id in ("a1", "a2", "a3"):
            agent(router, agent_id, "cards", capacity=10)
        for i in range(20):
            router.enqueue(f"c{i}", "cards", now=float(i))
        return [a.agent_id for a in router.assign(now=100.0)]

    assert run(7) == run(7)


def test_least_loaded_agents_are_preferred() -> None:
    router = make_router()
    agent(router, "busy", "cards", capacity=2)
    router.enqueue("c0", "cards", now=0.0)
    router.assign(now=0.0)
    assert router.agent("busy").load == 1
    agent(router, "idle", "cards", capacity=2)
    for i in range(1, 4):
        router.enqueue(f"c{i}", "cards", now=float(i))
    picks = [a.agent_id for a in router.assign(now=5.0)]
    assert picks[0] == "idle"  # occupancy 0/2 beats 1/2
    assert sorted(picks) == ["busy", "idle", "idle"]


def test_uniform_mode_ignores_load() -> None:
    counts: Counter[str] = Counter()
    for seed in range(400):
        router = make_router(seed=seed, prefer_least_loaded=False)
        agent(router, "busy", "cards", capacity=2)
        router.enqueue("c0", "cards", now=0.0)
        router.assign(now=0.0)
        agent(router, "idle", "cards", capacity=2)
        router.enqueue("c1", "cards", now=1.0)
        counts[router.assign(now=2.0)[0].agent_id] += 1
    assert 140 < counts["busy"] < 260


# ------------------------------------------------------------------ transfers


@pytest.fixture
def busy_router() -> Router:
    """c1 is held by a1; a2 is free; a3 is away; a4 is full."""
    router = make_router()
    agent(router, "a1", "cards")
    router.enqueue("c1", "cards", now=0.0)
    assert router.assign(now=1.0) == [Assignment("c1", "a1", "cards", 1.0)]
    agent(router, "a2", "wealth")
    router.add_agent("a3", ["cards"], status="away")
    agent(router, "a4", "cards")
    router.enqueue("c4", "cards", now=2.0)
    router.assign(now=2.0)
    assert router.agent_of("c4") == "a4"
    return router


def test_transfer_to_an_available_agent(busy_router: Router) -> None:
    result = busy_router.transfer("c1", by_agent="a1", to_agent="a2", now=5.0)
    assert result == Assignment("c1", "a2", "cards", 0.0)
    assert busy_router.agent_of("c1") == "a2"
    assert busy_router.agent("a1").load == 0 and busy_router.agent("a2").load == 1


@pytest.mark.parametrize(
    ("by", "kwargs", "code"),
    [
        ("a2", {"to_agent": "a4"}, RoutingErrorCode.FORBIDDEN),  # not the holder
        ("a1", {"to_agent": "a3"}, RoutingErrorCode.UNAVAILABLE),  # away
        ("a1", {"to_agent": "a4"}, RoutingErrorCode.NO_CAPACITY),  # full
        ("a1", {"to_agent": "a1"}, RoutingErrorCode.INVALID),  # self
        ("a1", {"to_agent": "ghost"}, RoutingErrorCode.NOT_FOUND),
        ("a1", {}, RoutingErrorCode.INVALID),
        ("a1", {"to_agent": "a2", "to_skill": "cards"}, RoutingErrorCode.INVALID),
        ("a1", {"to_skill": "loans"}, RoutingErrorCode.UNKNOWN_SKILL),
    ],
)
def test_transfer_refusals_change_nothing(
    busy_router: Router, by: str, kwargs: dict[str, str], code: RoutingErrorCode
) -> None:
    before = busy_router.agents()
    with pytest.raises(RoutingError) as exc:
        busy_router.transfer("c1", by_agent=by, now=5.0, **kwargs)
    assert code_of(exc) is code
    assert busy_router.agents() == before
    assert busy_router.agent_of("c1") == "a1"


def test_transfer_to_disconnected_agent_is_refused(busy_router: Router) -> None:
    busy_router.agent_disconnected("a2", now=3.0)
    with pytest.raises(RoutingError) as exc:
        busy_router.transfer("c1", by_agent="a1", to_agent="a2", now=5.0)
    assert code_of(exc) is RoutingErrorCode.UNAVAILABLE


def test_transfer_of_a_queued_contact_is_refused(busy_router: Router) -> None:
    busy_router.enqueue("q", "cards", now=3.0)
    with pytest.raises(RoutingError) as exc:
        busy_router.transfer("q", by_agent="a1", to_skill="wealth", now=5.0)
    assert code_of(exc) is RoutingErrorCode.NOT_FOUND


def test_transfer_to_a_skill_goes_to_the_head_of_that_queue(busy_router: Router) -> None:
    busy_router.add_agent("a2", ["wealth"], status="away")  # nobody takes wealth for now
    busy_router.enqueue("w-waiting", "wealth", now=3.0)
    assert busy_router.transfer("c1", by_agent="a1", to_skill="wealth", now=5.0) is None
    assert busy_router.agent("a1").load == 0
    assert busy_router.position("c1") == 1
    assert busy_router.position("w-waiting") == 2
    busy_router.set_status("a2", "available")
    assert [a.contact_id for a in busy_router.assign(now=6.0)] == ["c1"]


# ------------------------------------------------------------------ disconnect grace


def test_contacts_requeued_only_after_the_grace_period() -> None:
    router = make_router()
    agent(router, "a1", "cards", capacity=2)
    router.enqueue("c0", "cards", now=0.0)
    router.enqueue("c1", "cards", now=1.0)
    router.assign(now=2.0)
    router.agent_disconnected("a1", now=10.0)
    router.agent_disconnected("a1", now=20.0)  # repeated notice does not reset the clock
    assert router.tick(now=40.0, grace_s=30) == []  # exactly the grace: not longer
    assert router.tick(now=40.5, grace_s=30) == [
        Requeue("c0", "a1", "cards"),
        Requeue("c1", "a1", "cards"),
    ]
    assert router.agent("a1").load == 0
    assert router.tick(now=100.0, grace_s=30) == []
    router.agent_connected("a1")
    assert {a.contact_id for a in router.assign(now=101.0)} == {"c0", "c1"}


def test_reconnect_within_grace_keeps_contacts() -> None:
    router = make_router()
    agent(router, "a1", "cards")
    router.enqueue("c0", "cards", now=0.0)
    router.assign(now=1.0)
    router.agent_disconnected("a1", now=10.0)
    router.agent_connected("a1")
    assert router.tick(now=1000.0, grace_s=30) == []
    assert router.agent_of("c0") == "a1"


def test_requeued_contact_goes_to_another_agent() -> None:
    router = make_router()
    agent(router, "a1", "cards")
    router.enqueue("c0", "cards", now=0.0)
    router.assign(now=1.0)
    agent(router, "a2", "cards")
    router.enqueue("c1", "cards", now=2.0)
    router.assign(now=2.0)  # a2 takes c1
    router.release("a2", "c1", now=3.0)
    router.agent_disconnected("a1", now=4.0)
    router.tick(now=40.0, grace_s=30)
    assert router.assign(now=40.0) == [Assignment("c0", "a2", "cards", 40.0)]


def test_remove_agent_requeues_their_contacts() -> None:
    router = make_router()
    agent(router, "a1", "cards")
    router.enqueue("c0", "cards", now=0.0)
    router.assign(now=1.0)
    assert router.remove_agent("a1") == [Requeue("c0", "a1", "cards")]
    assert not router.has_agent("a1")
    assert router.position("c0") == 1
    with pytest.raises(RoutingError):
        router.agent("a1")


def test_has_agent_is_what_agents_lists() -> None:
    router = make_router()
    assert not router.has_agent("a1")
    agent(router, "a1", "cards")
    agent(router, "a2", "cards")
    assert router.has_agent("a1") and router.has_agent("a2") and not router.has_agent("a3")
    assert {a.agent_id for a in router.agents()} == {"a1", "a2"}


def test_login_again_keeps_contacts_and_updates_profile() -> None:
    router = make_router()
    agent(router, "a1", "cards", capacity=2)
    router.enqueue("c0", "cards", now=0.0)
    router.assign(now=1.0)
    router.agent_disconnected("a1", now=2.0)
    router.add_agent("a1", ["cards", "wealth"], capacity=3, status="available")
    view = router.agent("a1")
    assert view.connected and view.contacts == {"c0"} and view.capacity == 3
    assert view.skills == {"cards", "wealth"}


# ------------------------------------------------------------------ positions & estimates


def test_position_is_per_skill_queue() -> None:
    router = make_router()
    router.enqueue("c0", "cards", now=0.0)
    router.enqueue("w0", "wealth", now=1.0)
    router.enqueue("c1", "cards", now=2.0)
    assert [router.position(c) for c in ("c0", "w0", "c1")] == [1, 1, 2]
    with pytest.raises(RoutingError):
        router.position("nope")


def test_estimate_uses_handle_time_average_and_staffing() -> None:
    router = make_router(default_handle_s=300.0, ewma_alpha=0.5)
    router.enqueue("c", "cards", now=0.0)
    # Nobody serves cards: pessimistic (as if one agent).
    assert router.estimated_wait_s("c") == 300
    agent(router, "a1", "cards", capacity=2)
    agent(router, "a2", "cards", capacity=1)
    router.set_status("a2", "away")  # away agents do not count
    router.enqueue("c2", "cards", now=1.0)
    assert router.estimated_wait_s("c2") == 300  # position 2 × 300 s / 2 slots
    router.assign(now=2.0)  # both assigned; handle times 100 s and 200 s
    router.release("a1", "c", now=102.0)
    assert router.handle_time_s("cards") == pytest.approx(100.0)
    router.release("a1", "c2", now=202.0)
    assert router.handle_time_s("cards") == pytest.approx(150.0)  # 100 + 0.5 × (200 − 100)
    router.set_status("a2", "available")
    router.set_status("a1", "away")  # one slot left: a2's
    for i in range(4):
        router.enqueue(f"q{i}", "cards", now=300.0 + i)
    # a2 takes q0; q1..q3 wait for that one slot: q3 is position 3 → 3 × 150 s / 1
    router.assign(now=310.0)
    assert router.position("q3") == 3
    assert router.estimated_wait_s("q3") == 450


def test_estimate_without_agents_uses_observed_waits_and_is_capped() -> None:
    router = make_router(default_handle_s=10.0, max_estimate_s=500)
    agent(router, "a1", "wealth")
    router.enqueue("early", "wealth", now=0.0)
    router.assign(now=400.0)  # waited 400 s
    assert router.wait_time_s("wealth") == pytest.approx(400.0)
    router.remove_agent("a1")
    router.cancel("early")
    router.enqueue("next", "wealth", now=401.0)
    assert router.estimated_wait_s("next") == 400  # max(400 observed, 1 × 10)
    for i in range(100):
        router.enqueue(f"x{i}", "wealth", now=402.0 + i)
    assert router.estimated_wait_s("x99") == 500  # capped


# ------------------------------------------------------------------ restart


def test_restored_assignment_waits_for_the_agent_then_requeues() -> None:
    router = make_router()
    router.add_agent("a1", ["cards"], capacity=1, status="away")
    router.restore_assignment("a1", "c0", "cards", enqueued_at=5.0, now=100.0)
    router.restore_assignment("a1", "c1", "cards", enqueued_at=6.0, now=100.0)  # DB wins
    assert router.agent("a1").contacts == {"c0", "c1"}
    assert not router.agent("a1").connected
    with pytest.raises(RoutingError) as exc:
        router.restore_assignment("a1", "c0", "cards", enqueued_at=5.0, now=100.0)
    assert code_of(exc) is RoutingErrorCode.DUPLICATE
    assert router.tick(now=120.0, grace_s=30) == []
    assert [r.contact_id for r in router.tick(now=131.0, grace_s=30)] == ["c0", "c1"]
    assert router.position("c0") == 1


def test_restored_agent_who_reconnects_keeps_the_contact() -> None:
    router = make_router()
    router.add_agent("a1", ["cards"], status="away")
    router.restore_assignment("a1", "c0", "cards", enqueued_at=5.0, now=100.0)
    router.add_agent("a1", ["cards"], status="available")  # logs in again
    assert router.tick(now=1000.0, grace_s=30) == []
    assert router.agent_of("c0") == "a1"
