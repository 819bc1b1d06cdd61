"""The writer process: chat lines are stored by a child process, refusals and crashes come
back as errors, and a new child takes over after one dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import log
from audit.models import AuditEvent
from tests.trading.test_service import open_contact
from vbank import dbapi, writer_process
from vbank.contact.chat import ChatWriter, PostRefused, _Pending, prepare_statements, store_batch
from vbank.contact.models import ChatMessage, Contact
from vbank.db import Database, sync_url
from vbank.roles import Role
from vbank.writer import BatchRunner, Job
from vbank.writer_process import WriterProcessDied, process_safe


@pytest.fixture
async def parties(db: Database, make_user) -> tuple[int, int, str]:  # type: ignore[no-untyped-def]
    customer = await make_user("wp-customer", Role.CUSTOMER)
    agent = await make_user("wp-agent", Role.AGENT)
    return customer, agent, await open_contact(db, customer, agent, None)


@pytest.fixture
async def chatting(parties: tuple[int, int, str], db: Database) -> tuple[ChatWriter, int, str]:
    """A chat writer whose child runs: the customer's first line (seq 1) is stored."""
    customer, _, cid = parties
    chat = ChatWriter(db, in_process=True)
    await chat.post(cid, customer, "customer", "first", "start the child")
    return chat, customer, cid


async def test_lines_are_stored_by_a_child_process(
    db: Database, parties: tuple[int, int, str]
) -> None:
    customer, agent, cid = parties
    chat = ChatWriter(db, in_process=True)
    results = await asyncio.gather(
        *(chat.post(cid, customer, "customer", f"c{i}", f"line {i}") for i in range(30))
    )
    assert sorted(r.seq for r in results) == list(range(1, 31))
    assert all(not r.duplicate and r.agent_id == agent for r in results)
    pid = db.process_writer.pid
    assert pid is not None and pid != os.getpid()
    assert db.process_writer.batches < 30  # lines that arrived together shared a commit

    again = await chat.post(cid, customer, "customer", "c7", "line 7")  # a resend
    assert again.duplicate and again.seq == next(r.seq for r in results if r.client_id == "c7")

    async with db.sessions() as session:
        stored = (
            await session.execute(
                select(ChatMessage.seq, ChatMessage.text).where(ChatMessage.contact_id == cid)
            )
        ).all()
        audited = (
            await session.scalars(
                select(AuditEvent.session_ref).where(AuditEvent.type == "chat.message")
            )
        ).all()
        report = await log.verify_database(session)
    assert len(stored) == 30 and {t for _, t in stored} == {f"line {i}" for i in range(30)}
    assert audited == [cid] * 30
    assert report.ok  # the child's appends and the parent's share one chain


async def test_a_line_is_numbered_after_the_writer_it_waited_for(
    db: Database, parties: tuple[int, int, str]
) -> None:
    """Another transaction holds the contact and adds line 2; a line posted meanwhile
    waits for it and becomes line 3: numbers come from the stored lines, read once the
    contact is locked, with no counter on the contact any more."""
    customer, agent, cid = parties
    chat = ChatWriter(db)
    assert (await chat.post(cid, customer, "customer", "a", "first")).seq == 1
    async with db.transaction() as session:
        await session.execute(select(Contact).where(Contact.id == cid).with_for_update())
        session.add(
            ChatMessage(
                contact_id=cid,
                seq=2,
                sender_id=agent,
                sender_role="agent",
                client_id="held",
                text="held",
                created_at=datetime.now(UTC),
            )
        )
        await session.flush()
        waiting = asyncio.create_task(chat.post(cid, customer, "customer", "b", "second"))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # it waits for the contact
    assert (await waiting).seq == 3


async def test_refusals_cross_the_process(db: Database, parties: tuple[int, int, str]) -> None:
    customer, _, cid = parties
    chat = ChatWriter(db, in_process=True)
    with pytest.raises(PostRefused) as refused:
        await chat.post(uuid.uuid4().hex, customer, "customer", "x1", "to nowhere")
    assert refused.value.code == "not_found"
    ok = await chat.post(cid, customer, "customer", "x2", "still served")
    assert ok.seq == 1


async def test_only_marked_bulk_handlers_cross(db: Database) -> None:
    def handler(session, items):  # type: ignore[no-untyped-def]
        return items

    with pytest.raises(TypeError):
        await db.process_writer.run_bulk(handler, 1)
    with pytest.raises(TypeError):
        await db.process_writer.run(lambda session: 1)


@process_safe
def _slow_batch(session: Session, items: list[float]) -> list[float]:
    """A bulk handler that keeps the child busy (for killing it mid-batch)."""
    time.sleep(max(items))
    return items


async def test_a_dead_child_fails_its_batch_and_is_replaced(
    db: Database, chatting: tuple[ChatWriter, int, str]
) -> None:
    chat, customer, cid = chatting
    writer = db.process_writer
    first = writer.pid
    assert first is not None
    busy = asyncio.ensure_future(writer.run_bulk(_slow_batch, 5.0))
    lost = asyncio.ensure_future(chat.post(cid, customer, "customer", "k2", "lost with the child"))
    await asyncio.sleep(0.5)  # both sent; the child is inside the slow batch
    os.kill(first, signal.SIGKILL)
    for job in (busy, lost):
        with pytest.raises(WriterProcessDied):
            await asyncio.wait_for(job, 10)
    after = await chat.post(cid, customer, "customer", "k2", "resent")  # the client resends
    assert after.seq == 2 and not after.duplicate
    assert writer.starts == 2 and writer.pid not in (None, first)


async def test_an_idle_child_that_died_is_replaced_unnoticed(
    db: Database, chatting: tuple[ChatWriter, int, str]
) -> None:
    chat, customer, cid = chatting
    writer = db.process_writer
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await asyncio.sleep(0.3)  # nothing was in flight: nobody's line is lost
    after = await chat.post(cid, customer, "customer", "i2", "after")
    assert after.seq == 2 and writer.starts == 2 and writer.pid not in (None, first)


async def test_frames_sent_while_the_child_is_busy_share_a_commit(
    db: Database, chatting: tuple[ChatWriter, int, str]
) -> None:
    """Lines queued in separate event-loop turns while a batch runs are merged."""
    chat, customer, cid = chatting
    writer = db.process_writer
    busy = asyncio.ensure_future(writer.run_bulk(_slow_batch, 0.5))
    posts = []
    for i in range(1, 21):  # one frame per turn
        posts.append(asyncio.ensure_future(chat.post(cid, customer, "customer", f"m{i}", "x")))
        await asyncio.sleep(0.005)
    before = writer.batches
    results = await asyncio.gather(*posts)
    await busy
    assert [r.seq for r in results] == list(range(2, 22))  # in the order sent
    assert writer.batches - before <= 3  # not one commit each


async def test_close_stops_the_child(settings, parties: tuple[int, int, str]) -> None:  # type: ignore[no-untyped-def]
    customer, _, cid = parties
    db = Database(settings.database_url)
    await ChatWriter(db, in_process=True).post(cid, customer, "customer", "z1", "hello")
    pid = db.process_writer.pid
    assert pid is not None
    await db.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_chat_events_have_no_listeners(app) -> None:  # type: ignore[no-untyped-def]
    """The child runs no audit listeners, so none may exist for what it appends."""
    assert not log._listeners.get("chat.message")


def _frame(items: list[float]) -> bytes:
    data = pickle.dumps([(_slow_batch, i) for i in items])
    return struct.pack(">I", len(data)) + data


def _frames_after(sock: socket.socket, delay: float, data: bytes) -> threading.Thread:
    thread = threading.Timer(delay, sock.sendall, args=(data,))
    thread.start()
    return thread


@contextlib.contextmanager
def _child_side(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[socket.socket, writer_process._Frames]]:
    """The parent's end of a socket pair and the child's frame reader on the other; the
    linger is stretched to a second so that the tests do not depend on the machine's speed."""
    monkeypatch.setattr(writer_process, "LINGER_S", 1.0)
    parent, child = socket.socketpair()
    with parent, child:
        yield parent, writer_process._Frames(child, max_batch=256)


def test_a_small_batch_lingers_for_company(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few jobs wait a moment for more (one commit instead of several)."""
    with _child_side(monkeypatch) as (parent, frames):
        parent.sendall(_frame([0.0]))
        late = _frames_after(parent, 0.05, _frame([0.0, 0.0]))
        batch = frames.batch()
        late.join()
    assert batch is not None and len(batch) == 3


def test_a_full_batch_does_not_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    with _child_side(monkeypatch) as (parent, frames):
        parent.sendall(_frame([0.0] * writer_process.LINGER_JOBS))
        late = _frames_after(parent, 0.05, _frame([0.0]))
        first = frames.batch()
        late.join()
        parent.shutdown(socket.SHUT_WR)  # the last frame need not wait for company
        second = frames.batch()
    assert first is not None and len(first) == writer_process.LINGER_JOBS
    assert second is not None and len(second) == 1


async def test_an_item_that_does_not_cross_fails_alone(
    db: Database, chatting: tuple[ChatWriter, int, str]
) -> None:
    chat, customer, cid = chatting
    bad, good = await asyncio.gather(  # queued in the same turn: one frame
        db.process_writer.run_bulk(_slow_batch, lambda: 0.0),
        chat.post(cid, customer, "customer", "p2", "beside it"),
        return_exceptions=True,
    )
    assert isinstance(bad, (pickle.PicklingError, AttributeError, TypeError))
    assert not isinstance(good, BaseException) and good.seq == 2
    after = await chat.post(cid, customer, "customer", "p3", "after")
    assert after.seq == 3 and db.process_writer.starts == 1


async def test_prepared_statements_serve_every_batch_length(
    db: Database, parties: tuple[int, int, str]
) -> None:
    """After the writer child's warm-up, batches of any length compile no statement: the
    contacts and resends are padded to the sizes it prepared, and padding changes no
    outcome (a resend is still found, each contact still numbered from 1)."""
    customer, agent, first = parties
    cids = [first] + [await open_contact(db, customer, agent, None) for _ in range(6)]
    runner = BatchRunner(sync_url(db.url), sqlite=db.is_sqlite)

    async def run(items: list[_Pending]) -> list[object]:
        jobs = [Job(None, store_batch, item) for item in items]
        return [o.value for o in await asyncio.to_thread(runner.run_batch, jobs)]

    try:
        prepare_statements(runner.engine.dialect)
        # the first batch compiles the statements of every length alike (insert, audit)
        [warm] = await run([_Pending(cids[0], customer, "customer", "w", "warm")])
        misses = dbapi._plan.cache_info().misses
        for n in (2, 3, 5, 7):
            batch = [_Pending(c, customer, "customer", f"n{n}-{c}", "hello") for c in cids[:n]]
            resend = _Pending(cids[0], customer, "customer", "w", "warm")
            out = await run([*batch, resend])
            assert [r.contact_id for r in out[:n]] == cids[:n]  # type: ignore[attr-defined]
            assert not any(r.duplicate for r in out[:n])  # type: ignore[attr-defined]
            assert out[n] == warm._replace(duplicate=True)  # type: ignore[attr-defined]
        assert dbapi._plan.cache_info().misses == misses
        async with db.sessions() as session:
            counts = {
                cid: len(
                    (
                        await session.execute(
                            select(ChatMessage.seq).where(ChatMessage.contact_id == cid)
                        )
                    ).all()
                )
                for cid in cids
            }
        assert counts == {
            c: 1 + 4 if i == 0 else sum(n > i for n in (2, 3, 5, 7)) for i, c in enumerate(cids)
        }
    finally:
        runner.dispose()
