"""The auditor console's API: search contacts, read a contact's full timeline, play its
recordings (decrypted on the fly, with HTTP Range so a ``<video>`` can seek), see the
verification evidence, and export an evidence bundle.

Auditors only read, but their reading is itself accountable: every search, timeline view,
snapshot view, playback and export appends an ``auditor.*`` event to the audit log before
any data leaves the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web
from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from audit.envelope import EnvelopeError, EnvelopeReader
from audit.log import Actor, append
from audit.models import AuditEvent
from vbank.calls import CONSENT_TEXT, CONSENT_TEXT_SHA256
from vbank.contact.models import ChatMessage, Contact, last_seq_of
from vbank.context import SERVICES
from vbank.db import utc_or_none as _utc
from vbank.evidence import EvidenceNotFound, keyring_from_settings
from vbank.http.access import RouteTable, roles
from vbank.http.middleware import CSP, principal_of
from vbank.http.problems import Problem
from vbank.identity.models import Verification
from vbank.models import User
from vbank.roles import Role

logger = logging.getLogger(__name__)

routes = RouteTable()
AUDITORS: Final = roles(Role.AUDITOR)

Json = dict[str, Any]

DEFAULT_LIMIT: Final = 25
MAX_LIMIT: Final = 100
OUTCOMES: Final = ("verified", "rejected", "transaction_executed", "closed", "open")
SIDES: Final = ("customer", "agent")
SNAPSHOT_KINDS: Final = ("reference", "live")
RECORDING_TYPE: Final = "video/x-matroska"
STREAM_STEP: Final = 1 << 20  # a multiple of the envelope chunk size: reads stay aligned
PLAYBACK_AUDIT_WINDOW_US: Final = 10 * 60 * 1_000_000
"""A ``<video>`` issues many range requests per viewing; one playback event covers an
auditor's reads of one recording for this long (a read from byte 0 always logs anew)."""

_CONTACT_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ATTEMPT_RE: Final = re.compile(r"[1-9][0-9]{0,5}")
_RECORDING_FILE_RE: Final = re.compile(
    r"(?P<contact>[A-Za-z0-9_-]{1,64})/attempt-(?P<attempt>[1-9][0-9]{0,5})/"
    r"(?P<side>customer|agent)\.mkv(?:\.venv)?"
)
_RANGE_RE: Final = re.compile(r"([0-9]{0,20})-([0-9]{0,20})")
_FILE_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
_NUMBER_RE: Final = re.compile(r"[0-9]{1,9}")

EXPORT_UNAVAILABLE: Final = (
    "evidence export is not available yet: the bundle exporter is not installed"
)


def _actor(request: web.Request) -> Actor:
    return Actor(principal_of(request).user_id, Role.AUDITOR.value)


def _iso(ts: datetime | None) -> str | None:
    value = _utc(ts)
    return value.isoformat() if value is not None else None


def _iso_us(ts_us: int) -> str:
    return (
        datetime.fromtimestamp(ts_us // 1_000_000, UTC)
        .replace(microsecond=ts_us % 1_000_000)
        .isoformat()
    )


def _bad(detail: str) -> Problem:
    return Problem(400, "invalid_request", detail)


def _contact_id(request: web.Request) -> str:
    value = request.match_info["contact_id"]
    if not _CONTACT_ID_RE.fullmatch(value):
        raise Problem(404, "not_found", "no such contact")
    return value


async def _contact_or_404(session: AsyncSession, contact_id: str) -> Contact:
    contact = await session.get(Contact, contact_id)
    if contact is None:
        raise Problem(404, "not_found", "no such contact")
    return contact


# ---------------------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchQuery:
    """Validated search parameters; ``to`` is an exclusive upper bound."""

    customer: str | None
    agent: str | None
    since: datetime | None
    until: datetime | None
    outcome: str | None
    limit: int
    cursor: tuple[datetime, str] | None

    def filters(self) -> Json:
        """What was asked, for the audit event (only the parameters given)."""
        out: Json = {}
        for name, value in (
            ("customer", self.customer),
            ("agent", self.agent),
            ("from", _iso(self.since)),
            ("to", _iso(self.until)),
            ("outcome", self.outcome),
        ):
            if value is not None:
                out[name] = value
        return out


def parse_when(value: str, *, end: bool) -> datetime:
    """An ISO date or date-time; a bare date for ``to`` means the end of that day.

    Browsers send local midnight as a full date-time with offset, so the auditor's own
    days are searched; a bare date is taken as a UTC day.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise _bad(f"{'to' if end else 'from'}: not an ISO date or date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def encode_cursor(created_at: datetime, contact_id: str) -> str:
    """Keyset cursor (time, id) of the last row shown: stable while contacts are added."""
    raw = f"{_iso(created_at)}|{contact_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        when, _, contact_id = raw.partition("|")
        moment = datetime.fromisoformat(when)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _bad("cursor: not a cursor this server gave out") from None
    if moment.tzinfo is None or not _CONTACT_ID_RE.fullmatch(contact_id):
        raise _bad("cursor: not a cursor this server gave out")
    return moment.astimezone(UTC), contact_id


def parse_search(query: Mapping[str, str]) -> SearchQuery:
    """Validate the query string; anything malformed is a 400 problem naming the field."""

    def text(name: str) -> str | None:
        value = query.get(name, "").strip()
        if len(value) > 64:
            raise _bad(f"{name}: at most 64 characters")
        return value or None

    outcome = text("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise _bad(f"outcome: one of {', '.join(OUTCOMES)}")
    raw_limit = query.get("limit", "").strip()
    if raw_limit:
        if not _NUMBER_RE.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise _bad(f"limit: a whole number from 1 to {MAX_LIMIT}")
        limit = int(raw_limit)
    else:
        limit = DEFAULT_LIMIT
    since = parse_when(v, end=False) if (v := text("from")) else None
    until = parse_when(v, end=True) if (v := text("to")) else None
    cursor_text = query.get("cursor", "").strip()
    if len(cursor_text) > 256:
        raise _bad("cursor: not a cursor this server gave out")
    return SearchQuery(
        customer=text("customer"),
        agent=text("agent"),
        since=since,
        until=until,
        outcome=outcome,
        limit=limit,
        cursor=decode_cursor(cursor_text) if cursor_text else None,
    )


async def _user_ids(session: AsyncSession, who: str, role: Role) -> list[int]:
    """Users of ``role`` named by id or (case-insensitive) username."""
    match: ColumnElement[bool] = User.username == who.lower()
    if _NUMBER_RE.fullmatch(who):
        match = or_(match, User.id == int(who))
    rows = await session.scalars(select(User.id).where(match, User.role == role.value))
    return list(rows)


def _outcome_clause(outcome: str) -> ColumnElement[bool]:
    if outcome == "verified":
        return Contact.verified_at.is_not(None)
    if outcome == "rejected":
        return exists().where(
            Verification.contact_id == Contact.id, Verification.decision == "rejected"
        )
    if outcome == "transaction_executed":
        return exists().where(
            AuditEvent.session_ref == Contact.id, AuditEvent.type == "transaction.executed"
        )
    if outcome == "closed":
        return Contact.state == "closed"
    return Contact.state != "closed"


async def search_contacts(session: AsyncSession, q: SearchQuery) -> tuple[list[Json], str | None]:
    """One page of matching contacts, newest first, and the cursor of the next page."""
    customer = aliased(User)
    agent = aliased(User)
    stmt = (
        select(
            Contact,
            customer.display_name,
            customer.username,
            agent.display_name,
            last_seq_of(Contact.id),
        )
        .join(customer, Contact.customer_id == customer.id)
        .outerjoin(agent, Contact.agent_id == agent.id)
    )
    if q.customer is not None:
        stmt = stmt.where(
            Contact.customer_id.in_(await _user_ids(session, q.customer, Role.CUSTOMER))
        )
    if q.agent is not None:
        agents = await _user_ids(session, q.agent, Role.AGENT)
        # the current agent, or any agent who acted in the contact (before a transfer)
        stmt = stmt.where(
            or_(
                Contact.agent_id.in_(agents),
                exists().where(
                    AuditEvent.session_ref == Contact.id, AuditEvent.actor_id.in_(agents)
                ),
            )
        )
    if q.since is not None:
        stmt = stmt.where(Contact.created_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(Contact.created_at < q.until)
    if q.outcome is not None:
        stmt = stmt.where(_outcome_clause(q.outcome))
    if q.cursor is not None:
        at, last_id = q.cursor
        stmt = stmt.where(
            or_(Contact.created_at < at, and_(Contact.created_at == at, Contact.id < last_id))
        )
    stmt = stmt.order_by(Contact.created_at.desc(), Contact.id.desc()).limit(q.limit + 1)
    rows = (await session.execute(stmt)).all()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    ids = [row[0].id for row in rows]
    recordings: dict[str, int] = {}
    verifications: dict[str, int] = {}
    if ids:
        counted = await session.execute(
            select(AuditEvent.session_ref, func.count())
            .where(AuditEvent.session_ref.in_(ids), AuditEvent.type == "recording.finalised")
            .group_by(AuditEvent.session_ref)
        )
        recordings = {str(ref): int(n) for ref, n in counted.all()}
        attempts = await session.execute(
            select(Verification.contact_id, func.count())
            .where(Verification.contact_id.in_(ids))
            .group_by(Verification.contact_id)
        )
        verifications = {str(ref): int(n) for ref, n in attempts.all()}
    out = [
        {
            "contact_id": contact.id,
            "customer": {"id": contact.customer_id, "name": cust_name, "username": cust_user},
            "agent": (
                {"id": contact.agent_id, "name": agent_name}
                if contact.agent_id is not None
                else None
            ),
            "skill": contact.skill,
            "state": contact.state,
            "created_at": _iso(contact.created_at),
            "closed_at": _iso(contact.closed_at),
            "close_reason": contact.close_reason,
            "verified_at": _iso(contact.verified_at),
            "messages": messages,
            "recordings": recordings.get(contact.id, 0),
            "verifications": verifications.get(contact.id, 0),
        }
        for contact, cust_name, cust_user, agent_name, messages in rows
    ]
    cursor = encode_cursor(rows[-1][0].created_at, rows[-1][0].id) if more and rows else None
    return out, cursor


@routes.get("/api/auditor/sessions", AUDITORS, name="auditor_sessions")
async def sessions(request: web.Request) -> web.Response:
    """Search contacts; the search itself (filters, result count) is audited."""
    q = parse_search(request.query)
    services = request.app[SERVICES]
    async with services.db.transaction() as session:
        rows, cursor = await search_contacts(session, q)
        await append(
            session,
            "auditor.viewed",
            {
                "what": "search",
                "filters": q.filters(),
                "results": len(rows),
                "page": bool(q.cursor),
            },
            actor=_actor(request),
        )
    return web.json_response({"sessions": rows, "next_cursor": cursor})


# ---------------------------------------------------------------------------- timeline


def _attempt_json(v: Verification) -> Json:
    base = f"/api/auditor/snapshots/{v.id}"
    return {
        "attempt_id": v.id,
        "state": v.state,
        "reference_kind": v.reference_kind,
        "challenge": [s for s in v.challenge.split(",") if s],
        "started_at": _iso(v.started_at),
        "finished_at": _iso(v.finished_at),
        "distance": v.distance,
        "threshold": v.threshold,
        "match": v.match,
        "liveness_passed": v.liveness_passed,
        "liveness_reasons": [r for r in v.liveness_reasons.split("\n") if r],
        "good_frames": v.good_frames,
        "decision": v.decision,
        "decided_at": _iso(v.decided_at),
        "decision_reason": v.decision_reason,
        "snapshots": {
            "reference": f"{base}/reference" if v.reference_key else None,
            "live": f"{base}/live" if v.live_key else None,
        },
    }


def recording_of(contact_id: str, payload: Json) -> Json | None:
    """Attempt, side and link of a ``recording.finalised`` payload (None if it names a
    file outside this contact's folder)."""
    rel = payload.get("file")
    m = _RECORDING_FILE_RE.fullmatch(rel) if isinstance(rel, str) else None
    if m is None or m["contact"] != contact_id or m["side"] != payload.get("side", m["side"]):
        return None
    attempt = int(m["attempt"])
    return {
        "attempt": attempt,
        "side": m["side"],
        "url": f"/api/auditor/recordings/{contact_id}/{attempt}/{m['side']}",
        "bytes": payload.get("bytes"),
        "duration_s": payload.get("duration_s"),
        "sha256": payload.get("sha256"),
        "video_frames": payload.get("video_frames"),
        "encrypted": str(rel).endswith(".venv"),
    }


async def _integrity(session: AsyncSession, contact_id: str) -> Json:
    """The verifier's report when ``audit.verifier`` provides ``verify_contact``, else
    "not checkpointed". Statuses: ``ok`` (every event in a signed checkpoint), ``pending``
    (intact, newest events not yet checkpointed), ``not_checkpointed``, ``failed`` (the
    record was altered) and ``error`` (the check could not run)."""
    out: Json = {
        "status": "not_checkpointed",
        "ok": None,
        "reason": "",
        "checkpoint_size": None,
        "events": None,
        "pending": None,
        "first_bad_seq": None,
    }
    if importlib.util.find_spec("audit.verifier") is None:
        return out
    verify_contact = getattr(importlib.import_module("audit.verifier"), "verify_contact", None)
    if not callable(verify_contact):
        return out
    try:
        report: Any = verify_contact(session, contact_id)
        if inspect.isawaitable(report):
            report = await report
        ok = bool(report.ok)
    except Exception:
        logger.exception("integrity check of contact %s failed to run", contact_id)
        return {**out, "status": "error"}

    def number(name: str) -> int | None:
        value = getattr(report, name, None)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    size, pending = number("checkpoint_size"), number("pending")
    if not ok:
        status = "failed"
    elif not size:
        status = "not_checkpointed"
    else:
        status = "pending" if pending else "ok"
    return {
        "status": status,
        "ok": ok,
        "reason": str(getattr(report, "reason", "") or ""),
        "checkpoint_size": size,
        "events": number("events"),
        "pending": pending,
        "first_bad_seq": number("first_bad_seq"),
    }


def _export_available() -> bool:
    return importlib.util.find_spec("audit.bundle") is not None


async def build_timeline(session: AsyncSession, contact: Contact) -> Json:
    """Every audit event of the contact in order, each joined with what it refers to."""
    events = list(
        await session.scalars(
            select(AuditEvent).where(AuditEvent.session_ref == contact.id).order_by(AuditEvent.seq)
        )
    )
    messages = {
        m.seq: m
        for m in await session.scalars(
            select(ChatMessage).where(ChatMessage.contact_id == contact.id)
        )
    }
    attempts = {
        v.id: v
        for v in await session.scalars(
            select(Verification)
            .where(Verification.contact_id == contact.id)
            .order_by(Verification.started_at)
        )
    }
    user_ids = {e.actor_id for e in events if e.actor_id is not None}
    user_ids |= {contact.customer_id} | ({contact.agent_id} if contact.agent_id else set())
    users = {u.id: u for u in await session.scalars(select(User).where(User.id.in_(user_ids)))}

    def person(user_id: int | None) -> Json | None:
        if user_id is None:
            return None
        u = users.get(user_id)
        return {"id": user_id, "name": u.display_name if u else None, "role": u.role if u else None}

    items: list[Json] = []
    recordings: list[Json] = []
    for e in events:
        try:
            payload: Any = json.loads(e.payload)
        except ValueError:
            payload = {"unparsed": e.payload}
        if not isinstance(payload, dict):
            payload = {"value": payload}
        item: Json = {
            "seq": e.seq,
            "ts": _iso_us(e.ts_us),
            "ts_us": e.ts_us,
            "actor_role": e.actor_role or "system",
            "actor": person(e.actor_id),
            "type": e.type,
            "payload": payload,
        }
        if e.type == "chat.message":
            msg = messages.get(payload.get("seq")) if isinstance(payload.get("seq"), int) else None
            if msg is not None:
                item["chat"] = {
                    "text": msg.text,
                    "sender_role": msg.sender_role,
                    "sender": person(msg.sender_id),
                    # the event commits to the text's hash: a later edit of the row shows
                    "text_matches": hashlib.sha256(msg.text.encode()).hexdigest()
                    == payload.get("sha256"),
                }
        elif e.type == "video.consent":
            same = payload.get("consent_text_sha256") == CONSENT_TEXT_SHA256
            item["consent"] = {
                "version": payload.get("consent_version"),
                "accepted": payload.get("accepted"),
                "attempt": payload.get("attempt"),
                "text": CONSENT_TEXT if same else None,
            }
        elif e.type.startswith("verify.") and isinstance(payload.get("attempt_id"), str):
            v = attempts.get(payload["attempt_id"])
            if v is not None:
                item["verification"] = _attempt_json(v)
        elif e.type == "recording.finalised":
            rec = recording_of(contact.id, payload)
            if rec is not None:
                rec["seq"] = e.seq
                item["recording"] = rec
                recordings.append(rec)
        items.append(item)
    return {
        "contact": {
            "contact_id": contact.id,
            "customer": person(contact.customer_id),
            "agent": person(contact.agent_id),
            "skill": contact.skill,
            "state": contact.state,
            "created_at": _iso(contact.created_at),
            "assigned_at": _iso(contact.assigned_at),
            "closed_at": _iso(contact.closed_at),
            "close_reason": contact.close_reason,
            "verified_at": _iso(contact.verified_at),
            "verified_by": person(contact.verified_by),
            "verification_id": contact.verification_id,
            "messages": max(messages, default=0),
        },
        "events": items,
        "verifications": [_attempt_json(v) for v in attempts.values()],
        "recordings": recordings,
    }


@routes.get("/api/auditor/sessions/{contact_id}", AUDITORS, name="auditor_session")
async def session_detail(request: web.Request) -> web.Response:
    """A contact's timeline and integrity; the view is audited after the read."""
    contact_id = _contact_id(request)
    services = request.app[SERVICES]
    async with services.db.transaction() as session:
        contact = await _contact_or_404(session, contact_id)
        body = await build_timeline(session, contact)
        body["integrity"] = await _integrity(session, contact_id)
        body["export_available"] = _export_available()
        await append(
            session,
            "auditor.viewed",
            {"what": "timeline", "events": len(body["events"])},
            actor=_actor(request),
            session_ref=contact_id,
        )
    return web.json_response(body)


# ---------------------------------------------------------------------------- ranges


class RangeNotSatisfiable(Exception):
    """The Range header asks for bytes the file does not have (answer 416)."""


@dataclass(frozen=True)
class ByteRange:
    """A satisfiable byte range of a file."""

    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range to serve, or None for the whole file (no header, another unit,
    or several ranges: RFC 9110 §14.2 lets a server ignore Range; video asks for one)."""
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None
    m = _RANGE_RE.fullmatch(spec)
    if m is None or (not m[1] and not m[2]):
        raise RangeNotSatisfiable(header)
    if m[1]:
        first = int(m[1])
        last = int(m[2]) if m[2] else size - 1
        if first > last or first >= size:
            raise RangeNotSatisfiable(header)
        return ByteRange(first, min(last, size - 1) + 1)
    suffix = int(m[2])
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable(header)
    return ByteRange(max(0, size - suffix), size)


def requested_range(request: web.Request, size: int, etag: str | None) -> ByteRange | None:
    """The range to send for this request, honouring ``If-Range`` (a client holding
    another version of the file gets all of this one)."""
    if_range = request.headers.get("If-Range")
    if if_range is not None and (etag is None or if_range.strip() != etag):
        return None
    return parse_range(request.headers.get("Range"), size)


class ByteSource(Protocol):
    """Random access to a recording's plaintext."""

    size: int

    def read(self, start: int, end: int) -> bytes: ...

    def close(self) -> None: ...


class PlainFile:
    """A recording stored as plain Matroska (before encryption at rest)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._fh = path.open("rb")
        self.size = os.fstat(self._fh.fileno()).st_size

    def read(self, start: int, end: int) -> bytes:
        with self._lock:
            self._fh.seek(start)
            return self._fh.read(end - start)

    def close(self) -> None:
        self._fh.close()


class EnvelopeFile:
    """A recording encrypted at rest: each read decrypts and authenticates only its chunks."""

    def __init__(self, reader: EnvelopeReader) -> None:
        self._reader = reader
        self.size = reader.size

    def read(self, start: int, end: int) -> bytes:
        return self._reader.read_range(start, end)

    def close(self) -> None:
        self._reader.close()


async def stream(
    request: web.Request,
    source: ByteSource,
    *,
    content_type: str,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Answer from ``source`` with Range support (200, 206 or 416), decrypting as it goes."""
    size = source.size
    base = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": CSP,
        **headers,
    }
    try:
        wanted = requested_range(request, size, headers.get("ETag"))
    except RangeNotSatisfiable:
        raise Problem(
            416,
            "range_not_satisfiable",
            f"the file has {size} bytes",
            headers={**base, "Content-Range": f"bytes */{size}"},
        ) from None
    span = wanted or ByteRange(0, size)
    response = web.StreamResponse(status=206 if wanted else 200, headers=base)
    if wanted is not None:
        response.headers["Content-Range"] = f"bytes {span.start}-{span.end - 1}/{size}"
    response.content_type = content_type
    response.content_length = span.length
    await response.prepare(request)
    pos = span.start
    try:
        while pos < span.end:
            stop = min(span.end, (pos // STREAM_STEP + 1) * STREAM_STEP)
            data = await asyncio.to_thread(source.read, pos, stop)
            if len(data) != stop - pos:
                raise EnvelopeError("file is shorter than its size")
            await response.write(data)
            pos = stop
    except ConnectionResetError:
        return response  # the player moved on (a seek): nothing to finish
    except EnvelopeError as exc:
        # headers are gone already: cut the connection so the client sees a short body
        logger.warning("recording failed authentication while streaming: %s", type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


# ---------------------------------------------------------------------------- recordings


@dataclass(frozen=True)
class RecordingFile:
    """Where a recording is, and what its finalised event says to check it against."""

    path: Path
    file_id: bytes | None
    etag: str | None
    rel: str


async def _find_recording(
    session: AsyncSession, recordings_dir: Path, contact_id: str, attempt: int, side: str
) -> RecordingFile:
    """The file the newest ``recording.finalised`` event names (else the usual path of a
    recording not yet finalised), confined to the contact's folder."""
    found: Json | None = None
    for raw in await session.scalars(
        select(AuditEvent.payload)
        .where(AuditEvent.session_ref == contact_id, AuditEvent.type == "recording.finalised")
        .order_by(AuditEvent.seq)
    ):
        try:
            payload = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(payload, dict):
            continue
        rec = recording_of(contact_id, payload)
        if rec is not None and rec["attempt"] == attempt and rec["side"] == side:
            found = payload
    stem = f"{contact_id}/attempt-{attempt}/{side}.mkv"
    names = [stem + ".venv", stem]
    file_id: bytes | None = None
    etag: str | None = None
    if found is not None:
        rel = str(found["file"])
        names = [rel, *(n for n in names if n != rel)]
        fid = found.get("file_id")
        if isinstance(fid, str) and _FILE_ID_RE.fullmatch(fid):
            file_id = bytes.fromhex(fid)
        digest = found.get("sha256")
        if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest):
            etag = f'"{digest}"'
    path, name = await asyncio.to_thread(_existing, recordings_dir, contact_id, names)
    if path is None:
        raise Problem(404, "not_found", "no such recording")
    return RecordingFile(path, file_id, etag, name)


def _existing(root: Path, contact_id: str, names: list[str]) -> tuple[Path | None, str]:
    """The first of ``names`` that is a file inside the contact's own folder."""
    folder = (root / contact_id).resolve()
    for name in names:
        path = (root / name).resolve()
        if path.parent.parent == folder and path.is_file():
            return path, name
    return None, ""


async def _playback_logged_recently(
    session: AsyncSession, user_id: int, contact_id: str, attempt: int, side: str
) -> bool:
    since = time.time_ns() // 1000 - PLAYBACK_AUDIT_WINDOW_US
    for raw in await session.scalars(
        select(AuditEvent.payload).where(
            AuditEvent.session_ref == contact_id,
            AuditEvent.type == "auditor.playback",
            AuditEvent.actor_id == user_id,
            AuditEvent.ts_us >= since,
        )
    ):
        try:
            payload = json.loads(raw)
        except ValueError:
            continue
        if isinstance(payload, dict) and (payload.get("attempt"), payload.get("side")) == (
            attempt,
            side,
        ):
            return True
    return False


def _open_source(rec: RecordingFile, request: web.Request) -> ByteSource:
    if rec.path.name.endswith(".venv"):
        keyring = keyring_from_settings(request.app[SERVICES].settings)
        return EnvelopeFile(EnvelopeReader(rec.path, keyring, expected_file_id=rec.file_id))
    return PlainFile(rec.path)


@routes.get(
    "/api/auditor/recordings/{contact_id}/{attempt}/{side}", AUDITORS, name="auditor_recording"
)
async def recording(request: web.Request) -> web.StreamResponse:
    """Stream one side of one call attempt, decrypted on the fly, seekable by Range."""
    contact_id = _contact_id(request)
    attempt_text, side = request.match_info["attempt"], request.match_info["side"]
    if not _ATTEMPT_RE.fullmatch(attempt_text) or side not in SIDES:
        raise Problem(404, "not_found", "no such recording")
    attempt = int(attempt_text)
    services = request.app[SERVICES]
    actor = _actor(request)
    async with services.db.sessions() as session:
        await _contact_or_404(session, contact_id)
        rec = await _find_recording(
            session, services.realtime.calls.recordings_dir, contact_id, attempt, side
        )
    try:
        source = await asyncio.to_thread(_open_source, rec, request)
    except (EnvelopeError, OSError, ValueError) as exc:
        logger.warning(
            "recording %s/%d/%s cannot be opened: %s", contact_id, attempt, side, type(exc).__name__
        )
        raise Problem(
            500,
            "recording_unreadable",
            "the recording cannot be decrypted or failed its integrity check",
        ) from None
    try:
        try:
            wanted = requested_range(request, source.size, rec.etag)
        except RangeNotSatisfiable:
            pass  # stream() answers 416: no byte leaves, nothing to audit
        else:
            # a read from the start is a new viewing; a seek is part of one unless the
            # auditor has no recent playback event for this recording
            fresh = wanted is None or wanted.start == 0
            async with services.db.transaction() as session:
                if fresh or not await _playback_logged_recently(
                    session, actor.user_id or 0, contact_id, attempt, side
                ):
                    await append(
                        session,
                        "auditor.playback",
                        {
                            "attempt": attempt,
                            "side": side,
                            "file": rec.rel,
                            "range": request.headers.get("Range"),
                        },
                        actor=actor,
                        session_ref=contact_id,
                    )
        headers = {"Content-Disposition": f'inline; filename="{contact_id}-{attempt}-{side}.mkv"'}
        if rec.etag is not None:
            headers["ETag"] = rec.etag
        return await stream(request, source, content_type=RECORDING_TYPE, headers=headers)
    finally:
        source.close()


# ---------------------------------------------------------------------------- snapshots


def _image_type(data: bytes) -> str:
    """Snapshots are JPEG; reference photos keep the format they were enrolled in."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


@routes.get("/api/auditor/snapshots/{attempt_id}/{kind}", AUDITORS, name="auditor_snapshot")
async def snapshot(request: web.Request) -> web.Response:
    """A verification attempt's reference or live image, decrypted from the evidence store."""
    attempt_id, kind = request.match_info["attempt_id"], request.match_info["kind"]
    if kind not in SNAPSHOT_KINDS or not _CONTACT_ID_RE.fullmatch(attempt_id):
        raise Problem(404, "not_found", "no such snapshot")
    services = request.app[SERVICES]
    async with services.db.sessions() as session:
        row = await session.get(Verification, attempt_id)
    key = None if row is None else (row.reference_key if kind == "reference" else row.live_key)
    if row is None or not key:
        raise Problem(404, "not_found", "no such snapshot")
    try:
        data = await asyncio.to_thread(services.realtime.verifier.evidence.get, key)
    except EvidenceNotFound:
        raise Problem(404, "not_found", "the snapshot file is missing") from None
    except EnvelopeError as exc:
        logger.warning(
            "snapshot of attempt %s cannot be opened: %s", attempt_id, type(exc).__name__
        )
        raise Problem(
            500, "evidence_unreadable", "the snapshot cannot be decrypted or was altered"
        ) from None
    async with services.db.transaction() as session:
        await append(
            session,
            "auditor.viewed",
            {"what": "snapshot", "attempt_id": attempt_id, "kind": kind},
            actor=_actor(request),
            session_ref=row.contact_id,
        )
    return web.Response(
        body=data,
        content_type=_image_type(data),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


# ---------------------------------------------------------------------------- export


async def _write_bundle(request: web.Request, contact_id: str, out: Path) -> Json:
    """Write the bundle with ``audit.bundle.export_bundle(db, contact_id, out, settings)``.

    No ``actor`` is passed: this view records the export itself (``auditor.export``),
    so one export is one event.
    """
    bundle = importlib.import_module("audit.bundle")
    exporter = getattr(bundle, "export_bundle", None)
    if not callable(exporter):
        raise Problem(503, "export_unavailable", EXPORT_UNAVAILABLE)
    refused: type[Exception] = getattr(bundle, "BundleError", RuntimeError)
    services = request.app[SERVICES]
    try:
        info: Any = await exporter(services.db, contact_id, out, services.settings)
    except refused as exc:
        logger.warning("evidence export of contact %s refused: %s", contact_id, exc)
        raise Problem(409, "export_failed", f"the bundle cannot be made: {exc}") from None
    facts: Json = {}
    for name in ("checkpoint_size", "events"):
        value = getattr(info, name, None)
        if isinstance(value, int):
            facts[name] = value
    for name in ("files", "missing"):
        value = getattr(info, name, None)
        if isinstance(value, tuple | list):
            facts[name] = len(value)
    return facts


@routes.post("/api/auditor/sessions/{contact_id}/export", AUDITORS, name="auditor_export")
async def export(request: web.Request) -> web.StreamResponse:
    """The contact's self-verifying evidence bundle (zip), when the exporter is installed."""
    contact_id = _contact_id(request)
    services = request.app[SERVICES]
    async with services.db.sessions() as session:
        await _contact_or_404(session, contact_id)
    if not _export_available():
        raise Problem(503, "export_unavailable", EXPORT_UNAVAILABLE)
    exports = services.settings.data_dir / "exports"
    await asyncio.to_thread(exports.mkdir, parents=True, exist_ok=True)
    # the bundle holds decrypted recordings: it lives only as long as this response
    with tempfile.TemporaryDirectory(dir=exports) as tmp:
        out = Path(tmp) / "bundle.zip"
        facts = await _write_bundle(request, contact_id, out)
        digest, size = await asyncio.to_thread(_sha256_file, out)
        async with services.db.transaction() as session:
            await append(
                session,
                "auditor.export",
                {"bytes": size, "sha256": digest, **facts},
                actor=_actor(request),
                session_ref=contact_id,
            )
        source = await asyncio.to_thread(PlainFile, out)
        try:
            return await stream(
                request,
                source,
                content_type="application/zip",
                headers={
                    "Content-Disposition": (
                        f'attachment; filename="vbank-evidence-{contact_id}.zip"'
                    ),
                    "X-Bundle-SHA256": digest,
                },
            )
        finally:
            source.close()


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
