"""The worker against a real receiver on loopback: retries, Retry-After, 410, dead letters,
redelivery, concurrent workers, a worker killed mid-batch, the SSRF guard, rotation."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from sqlalchemy import func, select, update

from audit.envelope import MasterKeyring
from audit.log import append
from tests.webhooks.conftest import SUPERVISOR, MakeEndpoint, MakeWorker, states, wait_until
from tests.webhooks.receiver import Receiver, always
from vbank.db import Database
from vbank.webhooks import endpoints
from vbank.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from vbank.webhooks.outbox import enqueue
from vbank.webhooks.signing import secret_bytes


async def _enqueue_many(db: Database, n: int, event_type: str = "transaction.executed") -> None:
    async with db.transaction() as session:
        for i in range(n):
            await enqueue(session, event_type, {"reference": f"L{i}"})


async def _msg_ids(db: Database) -> set[str]:
    async with db.sessions() as session:
        return set((await session.execute(select(WebhookDelivery.msg_id))).scalars())


async def _all_in(db: Database, state: str) -> bool:
    s = await states(db)
    return bool(s) and all(v == state for v in s.values())


async def test_down_then_503_retry_after_then_200(
    db: Database, receiver: Receiver, make_endpoint: MakeEndpoint, make_worker: MakeWorker
) -> None:
    _, secret = await make_endpoint(receiver.url)
    receiver.secrets = [secret]
    async with db.transaction() as session:
        await append(
            session, "contact.closed", {"reason": "agent", "agent_id": 7}, session_ref="c1"
        )
        for i in range(4):
            await enqueue(session, "transaction.executed", {"reference": f"L{i}"})
    ids = await _msg_ids(db)
    assert len(ids) == 5

    worker = make_worker()
    assert await worker.run_once() == 5  # the receiver is down: five failed attempts
    assert receiver.calls == []

    def first_503(r: Receiver, msg_id: str) -> tuple[int, dict[str, str]]:
        if not r.calls_for(msg_id):
            return 503, {"Retry-After": "1"}
        return 200, {}

    receiver.script = first_503
    await receiver.start()
    await worker.start()
    await wait_until(lambda: _all_in(db, "delivered"))

    assert receiver.ok_ids() == ids  # every event arrived, with the id it was given
    assert all(c.verified for c in receiver.calls)  # signatures verify (published algorithm)
    for msg_id in ids:
        calls = receiver.calls_for(msg_id)
        assert [c.status for c in calls] == [503, 200]
        assert calls[1].at - calls[0].at >= 0.95  # Retry-After honoured
        assert calls[0].body == calls[1].body
    deduped = {c.msg_id: json.loads(c.body) for c in receiver.calls if c.status == 200}
    assert len(deduped) == 5
    closed = [b for b in deduped.values() if b["type"] == "contact.closed"]
    assert closed[0]["data"]["contact_id"] == "c1" and closed[0]["data"]["agent_id"] == 7
    async with db.sessions() as session:
        attempts = (
            await session.execute(
                select(
                    WebhookAttempt.delivery_id,
                    WebhookAttempt.status_code,
                    WebhookAttempt.error_class,
                ).order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)
            )
        ).all()
    by_delivery: dict[int, list[tuple[int | None, str | None]]] = {}
    for delivery_id, status, error in attempts:
        by_delivery.setdefault(delivery_id, []).append((status, error))
    assert len(by_delivery) == 5
    for record in by_delivery.values():
        assert record[0][0] is None and record[0][1] == "ClientConnectorError"
        assert record[1:] == [(503, None), (200, None)]


async def test_410_disables_the_endpoint_and_stops_its_deliveries(
    db: Database, receiver: Receiver, make_endpoint: MakeEndpoint, make_worker: MakeWorker
) -> None:
    ep_id, _ = await make_endpoint(receiver.url)
    receiver.script = always(410)
    await receiver.start()
    await _enqueue_many(db, 3)
    worker = make_worker(batch=1)
    assert await worker.run_once() == 1
    assert len(receiver.calls) == 1
    assert await _all_in(db, "dead")  # the other two will not be sent either
    async with db.sessions() as session:
        ep = await session.get(WebhookEndpoint, ep_id)
        assert ep is not None and not ep.enabled and ep.disabled_reason == "gone_410"
        letters = await endpoints.dead_letters(session)
    assert {d["last_error"] for d in letters} == {"endpoint_gone"}
    async with db.transaction() as session:
        assert await enqueue(session, "transaction.executed", {"reference": "x"}) == 0
    assert await worker.run_once() == 0


async def test_exhaustion_dead_letter_and_redelivery(
    db: Database, receiver: Receiver, make_endpoint: MakeEndpoint, make_worker: MakeWorker
) -> None:
    _, secret = await make_endpoint(receiver.url)
    receiver.secrets = [secret]
    receiver.script = always(500)
    await receiver.start()
    await _enqueue_many(db, 2)
    worker = make_worker(max_attempts=3)
    await worker.start()
    await wait_until(lambda: _all_in(db, "dead"))
    assert Counter(c.msg_id for c in receiver.calls) == {m: 3 for m in await _msg_ids(db)}

    async with db.sessions() as session:
        letters = await endpoints.dead_letters(session)
    assert len(letters) == 2 and all(d["last_status"] == 500 for d in letters)
    receiver.script = always(200)
    async with db.transaction() as session:
        await endpoints.redeliver(session, letters[0]["id"], actor=SUPERVISOR)
    await wait_until(lambda: _has_state(db, letters[0]["id"], "delivered"), timeout=5)
    assert receiver.ok_ids() == {letters[0]["msg_id"]}  # the same webhook-id as before
    assert (await states(db))[letters[1]["id"]] == "dead"


async def _has_state(db: Database, delivery_id: int, state: str) -> bool:
    return (await states(db)).get(delivery_id) == state


async def _slow_receiver_with_events(
    db: Database, receiver: Receiver, make_endpoint: MakeEndpoint, *, delay_s: float, events: int
) -> None:
    _, secret = await make_endpoint(receiver.url)
    receiver.secrets = [secret]
    receiver.delay_s = delay_s
    await receiver.start()
    await _enqueue_many(db, events)


async def test_two_workers_never_send_the_same_row_at_once(
    db: Database, receiver: Receiver, make_endpoint: MakeEndpoint, make_worker: MakeWorker
) -> None:
    await _slow_receiver_with_events(db, receiver, make_endpoint, delay_s=0.02, events=120)
    a = make_worker(batch=10, concurrency=10, name="worker-a")
    b = make_worker(batch=10, concurrency=10, name="worker-b")
    await asyncio.gather(a.start(), b.start())
    await wait_until(lambda: _all_in(db, "delivered"), timeout=60)
    assert len(receiver.calls) == 120  # each row sent exactly once
    assert receiver.max_parallel_same_id == 1
    assert all(c.verified for c in receiver.calls)
    async with db.sessions() as session:
        per_worker = dict(
            (
                await session.execute(
                    select(WebhookAttempt.worker, func.count()).group_by(WebhookAttempt.worker)
                )
            ).all()
        )
    assert set(per_worker) == {"worker-a", "worker-b"}
    assert sum(per_worker.values()) == 120


async def test_a_worker_killed_mid_batch_loses_nothing(
    db: Database, receiver: Receiver, make_endpoint: MakeEndpoint, make_worker: MakeWorker
) -> None:
    await _slow_receiver_with_events(db, receiver, make_endpoint, delay_s=0.5, events=20)
    doomed = make_worker(batch=20, concurrency=20, lease_s=1.5, name="doomed")
    await doomed.start()
    await wait_until(lambda: _some_in_flight(receiver), timeout=10)
    await doomed.stop(grace_s=0)  # killed: its batch is neither recorded nor released
    async with db.sessions() as session:
        claimed = (
            await session.execute(
                select(func.count()).where(WebhookDelivery.claimed_by == "doomed")
            )
        ).scalar_one()
    assert claimed == 20
    receiver.delay_s = 0
    survivor = make_worker(name="survivor")
    await survivor.start()
    await wait_until(lambda: _all_in(db, "delivered"), timeout=20)
    assert receiver.ok_ids() == await _msg_ids(db)  # nothing lost; de-dup by id
    async with db.sessions() as session:
        workers = set((await session.execute(select(WebhookAttempt.worker))).scalars())
    assert workers == {"survivor"}


async def _some_in_flight(receiver: Receiver) -> bool:
    return any(n > 0 for n in receiver.in_flight.values())


async def test_ssrf_guard_at_delivery_time(
    db: Database, receiver: Receiver, make_endpoint: MakeEndpoint, make_worker: MakeWorker
) -> None:
    await receiver.start()
    literal_id, _ = await make_endpoint(receiver.url)
    named_id, _ = await make_endpoint(f"http://localhost:{receiver.port}/hook")
    # the endpoints lose the exception (as if DNS or the row changed after they were saved)
    async with db.transaction() as session:
        await session.execute(update(WebhookEndpoint).values(allow_private=False))
    await _enqueue_many(db, 1)
    await make_worker().run_once()
    assert receiver.calls == []
    async with db.sessions() as session:
        errors = dict(
            (
                await session.execute(
                    select(WebhookDelivery.endpoint_id, WebhookAttempt.error_class).join(
                        WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id
                    )
                )
            ).all()
        )
    assert errors == {literal_id: "ssrf_blocked", named_id: "ssrf_blocked"}


async def test_rotation_sends_both_signatures(
    db: Database,
    keyring: MasterKeyring,
    receiver: Receiver,
    make_endpoint: MakeEndpoint,
    make_worker: MakeWorker,
) -> None:
    ep_id, old = await make_endpoint(receiver.url)
    async with db.transaction() as session:
        new_id, new = await endpoints.rotate_secret(session, keyring, ep_id, actor=SUPERVISOR)
    await receiver.start()
    await _enqueue_many(db, 1)
    await make_worker().run_once()
    [call] = receiver.calls
    assert len(call.signature.split(" ")) == 2
    from vbank.webhooks.signing import verify

    hdrs = {
        "webhook-id": call.msg_id,
        "webhook-timestamp": call.timestamp,
        "webhook-signature": call.signature,
    }
    assert verify([old], call.body, hdrs) == verify([new], call.body, hdrs) == call.msg_id
    # secrets are stored sealed: the raw key bytes are nowhere in the row
    async with db.sessions() as session:
        sealed = list((await session.execute(select(WebhookSecret.sealed))).scalars())
    assert len(sealed) == 2
    for blob in sealed:
        assert secret_bytes(old) not in blob and secret_bytes(new) not in blob
    # removing the old secret leaves one signature
    async with db.transaction() as session:
        old_id = min(s for s in (await endpoints.view(session))[0].secret_ids if s != new_id)
        await endpoints.remove_secret(session, ep_id, old_id, actor=SUPERVISOR)
    await _enqueue_many(db, 1)
    await make_worker().run_once()
    assert len(receiver.calls[-1].signature.split(" ")) == 1
