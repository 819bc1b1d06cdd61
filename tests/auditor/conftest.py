"""Data for the auditor console tests: users, contacts written straight into the database
(with the audit events production writes for them), recordings on disk (plain Matroska or
encrypted envelopes) and verification attempts with evidence."""

from __future__ import annotations

import fractions
import hashlib
import io
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from audit.envelope import EnvelopeWriter
from audit.log import Actor, append
from audit.models import AuditEvent
from tests.conftest import MakeUser, signin
from vbank.calls import CONSENT_TEXT_SHA256, CONSENT_VERSION
from vbank.config import Settings
from vbank.contact.models import ChatMessage, Contact
from vbank.db import Database
from vbank.evidence import EvidenceStore, keyring_from_settings
from vbank.identity.models import Verification
from vbank.roles import Role

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def make_mkv(seconds: float = 3.0, fps: int = 15, size: tuple[int, int] = (160, 120)) -> bytes:
    """A small VP8 Matroska file whose picture changes every frame (as a call records)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as container:
        stream = container.add_stream("libvpx", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8"}
        w, h = size
        for i in range(int(seconds * fps)):
            img = np.zeros((h, w, 3), dtype=np.uint8)
            img[:, :, 0] = (i * 8) % 256
            x = (i * 5) % w
            img[:, x : x + 20, 1] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


@dataclass
class People:
    auditor: int
    ana: int
    bob: int
    kate: int
    carl: int
    names: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def people(make_user: MakeUser) -> People:
    """auditor "audrey", agents "ana" and "bob", customers "kate" and "carl"."""
    ids = {
        "audrey": await make_user("audrey", Role.AUDITOR, display_name="Audrey Auditor"),
        "ana": await make_user("ana", Role.AGENT, display_name="Ana Agent"),
        "bob": await make_user("bob", Role.AGENT, display_name="Bob Agent"),
        "kate": await make_user("kate", Role.CUSTOMER, display_name="Kate Hill"),
        "carl": await make_user("carl", Role.CUSTOMER, display_name="Carl Client"),
    }
    return People(ids["audrey"], ids["ana"], ids["bob"], ids["kate"], ids["carl"], ids)


async def signed_client(
    aiohttp_client: Any, target: web.Application | TestServer, username: str
) -> TestClient[Any, Any]:
    """A new client (own cookie jar) of an app or of an already running server, signed in
    as ``username``; its CSRF token is in ``.csrf``."""
    client: TestClient[Any, Any] = await aiohttp_client(target)
    client.csrf = await signin(client, username)  # type: ignore[attr-defined]
    return client


@pytest.fixture
async def auditor(
    aiohttp_client: Any, app: web.Application, people: People
) -> TestClient[Any, Any]:
    return await signed_client(aiohttp_client, app, "audrey")


class Seeder:
    """Writes contacts and their events the way the running service would."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.recordings = settings.data_dir / "recordings"
        self.evidence = EvidenceStore.from_settings(settings)

    async def contact(
        self,
        customer: int,
        agent: int | None,
        *,
        created_at: datetime = T0,
        skill: str = "accounts",
        closed: bool = True,
        messages: tuple[tuple[str, str], ...] = (),
        verified: bool = False,
        events: tuple[tuple[str, dict[str, Any], int | None, str | None], ...] = (),
    ) -> str:
        """A contact with chat lines (role, text) and extra events (type, payload, actor id,
        role) between the chat and the close."""
        cid = uuid.uuid4().hex
        async with self.db.transaction() as s:
            contact = Contact(
                id=cid,
                customer_id=customer,
                agent_id=agent,
                skill=skill,
                state="closed" if closed else ("assigned" if agent else "queued"),
                created_at=created_at,
                queued_at=created_at,
                assigned_at=created_at + timedelta(seconds=5) if agent else None,
                closed_at=created_at + timedelta(minutes=10) if closed else None,
                close_reason="agent" if closed else None,
                verified_at=created_at + timedelta(minutes=3) if verified else None,
                verified_by=agent if verified else None,
            )
            s.add(contact)
            await s.flush()
            await append(
                s,
                "contact.queued",
                {"skill": skill},
                actor=Actor(customer, "customer"),
                session_ref=cid,
            )
            if agent is not None:
                await append(
                    s, "contact.assigned", {"agent_id": agent, "skill": skill}, session_ref=cid
                )
            for seq, (role, text) in enumerate(messages, start=1):
                sender = customer if role == "customer" else agent
                s.add(
                    ChatMessage(
                        contact_id=cid,
                        seq=seq,
                        sender_id=sender,
                        sender_role=role,
                        client_id=None,
                        text=text,
                        created_at=created_at + timedelta(seconds=10 + seq),
                    )
                )
                await s.flush()
                await append(
                    s,
                    "chat.message",
                    {"seq": seq, "sha256": hashlib.sha256(text.encode()).hexdigest()},
                    actor=Actor(sender, role),
                    session_ref=cid,
                )
            for type_, payload, actor_id, actor_role in events:
                await append(s, type_, payload, actor=Actor(actor_id, actor_role), session_ref=cid)
            if closed:
                await append(
                    s,
                    "contact.closed",
                    {"reason": "agent", "agent_id": agent, "messages": len(messages)},
                    actor=Actor(agent, "agent"),
                    session_ref=cid,
                )
        return cid

    async def consent(self, contact_id: str, customer: int, attempt: int = 1) -> None:
        async with self.db.transaction() as s:
            await append(
                s,
                "video.consent",
                {
                    "attempt": attempt,
                    "consent_version": CONSENT_VERSION,
                    "consent_text_sha256": CONSENT_TEXT_SHA256,
                    "accepted": True,
                },
                actor=Actor(customer, "customer"),
                session_ref=contact_id,
            )

    async def recording(
        self,
        contact_id: str,
        data: bytes,
        *,
        attempt: int = 1,
        side: str = "customer",
        encrypted: bool = False,
        event: bool = True,
    ) -> Path:
        """Store a recording as the media server does and (optionally) its finalised event."""
        folder = self.recordings / contact_id / f"attempt-{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "side": side,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "duration_s": 3.0,
            "video_frames": 45,
        }
        if encrypted:
            path = folder / f"{side}.mkv.venv"
            # small chunks: ranges then cross many chunk boundaries
            with EnvelopeWriter(path, keyring_from_settings(self.settings), chunk_size=4096) as w:
                w.write(data)
            payload["file_id"] = w.file_id.hex()
        else:
            path = folder / f"{side}.mkv"
            path.write_bytes(data)
        payload["file"] = path.relative_to(self.recordings).as_posix()
        if event:
            async with self.db.transaction() as s:
                await append(s, "recording.finalised", payload, session_ref=contact_id)
        return path

    async def verification(
        self,
        contact_id: str,
        customer: int,
        agent: int,
        *,
        decision: str = "verified",
        reference: bytes = b"\xff\xd8\xffreference-jpeg",
        live: bytes | None = b"\xff\xd8\xfflive-jpeg",
    ) -> str:
        """A finished attempt with evidence, its events and the agent's decision."""
        ref_key = self.evidence.put(reference, kind="reference")
        live_key = self.evidence.put(live, kind="snapshot") if live is not None else None
        attempt_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        async with self.db.transaction() as s:
            s.add(
                Verification(
                    id=attempt_id,
                    contact_id=contact_id,
                    customer_id=customer,
                    agent_id=agent,
                    reference_kind="on_file",
                    reference_key=ref_key,
                    live_key=live_key,
                    challenge="blink,turn_left",
                    started_at=now,
                    finished_at=now,
                    state="decided",
                    distance=0.31,
                    threshold=0.5,
                    match=True,
                    liveness_passed=decision == "verified",
                    liveness_reasons="" if decision == "verified" else "no_motion",
                    good_frames=12,
                    decision=decision,
                    decided_at=now,
                    decision_reason="looks right" if decision == "verified" else "replay",
                )
            )
            await s.flush()
            agent_actor = Actor(agent, "agent")
            await append(
                s,
                "verify.started",
                {"attempt_id": attempt_id, "reference": "on_file", "reference_evidence": ref_key},
                actor=agent_actor,
                session_ref=contact_id,
            )
            await append(
                s,
                "verify.attempt_result",
                {"attempt_id": attempt_id, "distance": 0.31, "threshold": 0.5, "match": True},
                session_ref=contact_id,
            )
            await append(
                s,
                "verify.decision",
                {"attempt_id": attempt_id, "outcome": decision, "reason": "r"},
                actor=agent_actor,
                session_ref=contact_id,
            )
            if decision == "verified":
                contact = await s.get(Contact, contact_id)
                assert contact is not None
                contact.verified_at = now
                contact.verified_by = agent
                contact.verification_id = attempt_id
        return attempt_id


@pytest.fixture
def seed(db: Database, settings: Settings) -> Seeder:
    return Seeder(db, settings)


async def events_of(db: Database, contact_id: str | None, type_: str) -> list[AuditEvent]:
    """Audit events of one type (of one contact, or without one for ``None``)."""
    async with db.sessions() as s:
        ref = (
            AuditEvent.session_ref.is_(None)
            if contact_id is None
            else (AuditEvent.session_ref == contact_id)
        )
        rows = await s.scalars(
            select(AuditEvent).where(ref, AuditEvent.type == type_).order_by(AuditEvent.seq)
        )
        return list(rows)
