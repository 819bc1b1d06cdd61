"""Face-match verification in a live video call, decided by the agent.

An attempt samples the customer's video from the media session's latest-frame tap, runs
the quality gates, the liveness challenge and the face encodings in the face process pool
(never on the event loop), streams progress to both parties, and ends with evidence for the
agent: the fused distance against the reference, what the calibrated threshold means, the
liveness verdict, and both snapshots (encrypted at rest). The agent approves or rejects;
an approval stamps the contact *verified* with the time and the agent's id. Every step is
an audit event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import cv2
import numpy as np
from sqlalchemy import select

from audit.log import Actor, append
from signaling import protocol as p
from signaling.hub import Hub
from signaling.media import TapClosedError
from vbank.calls import Calls
from vbank.contact.models import Contact
from vbank.contact.service import Caller, ContactView
from vbank.db import Database
from vbank.evidence import EvidenceStore
from vbank.identity.images import ImageRejected
from vbank.identity.liveness import Challenge, LivenessMonitor, Observation
from vbank.identity.matching import (
    Calibration,
    ReferenceEncoding,
    decide,
    encode_live,
    encode_reference,
    load_calibration,
)
from vbank.identity.models import Verification
from vbank.identity.pool import FacePool
from vbank.identity.quality import FaceTracker, QualityReport, fit_frame, track_frame
from vbank.models import ReferencePhoto

logger = logging.getLogger(__name__)

MAX_LIVE_ENCODINGS = 8
ENCODE_EVERY_S = 0.3
PROGRESS_EVERY_S = 0.25
FRAME_TIMEOUT_S = 5.0


class VerifyError(p.ProtocolError):
    pass


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88]
    )
    if not ok:
        raise RuntimeError("snapshot could not be encoded")
    return bytes(buf)


@dataclass
class Attempt:
    id: str
    view: ContactView
    agent_id: int
    reference_kind: str
    reference_key: str
    reference: ReferenceEncoding
    challenge: Challenge
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    state: str = "running"
    good_frames: int = 0
    frames: int = 0
    """Frames analysed; with the passive checks' face frames and the duration in the result
    event, it shows an auditor how many pictures the liveness verdict rests on."""
    encodings: list[Any] = field(default_factory=list)
    best_sharpness: float = -1.0
    best_frame: np.ndarray | None = None
    live_key: str | None = None
    finished: bool = False


class Verifier:
    def __init__(
        self,
        db: Database,
        hub: Hub,
        calls: Calls,
        evidence: EvidenceStore,
        *,
        pool: FacePool | None = None,
        calibration: Calibration | None = None,
        steps: int = 4,
        fixed_steps: tuple[str, ...] = (),
        time_limit_s: float = 20.0,
    ) -> None:
        self.db = db
        self.hub = hub
        self.calls = calls
        self.evidence = evidence
        self._pool = pool
        self.calibration = calibration or load_calibration()
        self.steps = steps
        self.fixed_steps = fixed_steps
        self.time_limit_s = time_limit_s
        self._documents: dict[str, tuple[str, ReferenceEncoding]] = {}  # contact -> (key, enc)
        self._attempts: dict[str, Attempt] = {}  # attempt id -> attempt
        self._by_contact: dict[str, str] = {}  # contact -> running attempt id

    @property
    def pool(self) -> FacePool:
        if self._pool is None:
            self._pool = FacePool()
        return self._pool

    async def prewarm(self) -> None:
        """Start the face workers (model loading takes seconds) when a call goes live, so
        the agent's first verification does not wait for it."""
        try:
            await self.pool.warm_up()
        except Exception:
            logger.exception("face pool warm-up failed")

    async def close(self) -> None:
        for attempt in list(self._attempts.values()):
            if attempt.task is not None and not attempt.task.done():
                attempt.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attempt.task
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # ------------------------------------------------------------------ helpers

    def _tap(self, view: ContactView) -> Any:
        media = self.calls.media_session(view.id)
        session = self.calls.session(view)
        if media is None or session.video != "live":
            raise VerifyError(p.ErrorCode.OUT_OF_ORDER, "verification needs live video")
        return media.tap

    async def _audit(
        self, view: ContactView, actor: Actor, type_: str, payload: dict[str, Any]
    ) -> None:
        async with self.db.transaction() as session:
            await append(session, type_, payload, actor=actor, session_ref=view.id)

    async def _both(self, view: ContactView, frame: p.ServerMessage) -> None:
        await self.hub.send(view.customer_id, frame)
        await self.hub.send(view.agent_id, frame)

    # ------------------------------------------------------------------ references

    async def _on_file(self, view: ContactView) -> tuple[str, ReferenceEncoding]:
        async with self.db.sessions() as session:
            photo = await session.scalar(
                select(ReferencePhoto)
                .where(ReferencePhoto.customer_id == view.customer_id)
                .order_by(ReferencePhoto.created_at.desc())
                .limit(1)
            )
        if photo is None:
            raise VerifyError(p.ErrorCode.NOT_FOUND, "the customer has no reference photo on file")
        data = await asyncio.to_thread(self.evidence.get, photo.storage_key)
        try:
            encoding = await self.pool.run(encode_reference, [data])
        except ImageRejected as exc:
            raise VerifyError(
                p.ErrorCode.INVALID_MESSAGE, f"reference photo refused: {exc.code}"
            ) from None
        return photo.storage_key, encoding

    async def capture_document(self, caller: Caller, view: ContactView) -> None:
        """Take the current frame as the ID document's photo for this contact's attempts."""
        tap = self._tap(view)
        try:
            async with asyncio.timeout(FRAME_TIMEOUT_S):
                frame = await tap.next_frame()
        except (TimeoutError, TapClosedError):
            raise VerifyError(p.ErrorCode.OUT_OF_ORDER, "no video frame to capture") from None
        rgb = frame.to_rgb()
        try:
            encoding = await self.pool.run(encode_reference, [rgb])
        except ImageRejected as exc:
            await self.hub.send(
                view.agent_id,
                p.VerifyReference(
                    contact_id=view.id,
                    source="document",
                    ok=False,
                    code=exc.code,
                    message=str(exc)[:120],
                ),
            )
            await self._audit(view, caller.actor, "verify.document_refused", {"code": exc.code})
            return
        data = await asyncio.to_thread(_jpeg, rgb)
        key = await asyncio.to_thread(self.evidence.put, data, kind="document")
        self._documents[view.id] = (key, encoding)
        await self._audit(
            view,
            caller.actor,
            "verify.document_captured",
            {"evidence": key, "sha256": hashlib.sha256(data).hexdigest()},
        )
        await self.hub.send(
            view.agent_id, p.VerifyReference(contact_id=view.id, source="document", ok=True)
        )

    # ------------------------------------------------------------------ attempts

    async def start(self, caller: Caller, view: ContactView, reference: str) -> None:
        if view.id in self._by_contact:
            raise VerifyError(p.ErrorCode.OUT_OF_ORDER, "a verification is already running")
        tap = self._tap(view)
        if reference == "document":
            if view.id not in self._documents:
                raise VerifyError(p.ErrorCode.OUT_OF_ORDER, "capture the ID document first")
            ref_key, encoding = self._documents[view.id]
        else:
            ref_key, encoding = await self._on_file(view)
        if self.fixed_steps:
            challenge = Challenge(steps=self.fixed_steps, seed=None, time_limit=self.time_limit_s)  # type: ignore[arg-type]
        else:
            challenge = Challenge.random(
                random.SystemRandom(), n_steps=self.steps, time_limit=self.time_limit_s
            )
        attempt = Attempt(
            id=uuid.uuid4().hex,
            view=view,
            agent_id=caller.user_id,
            reference_kind=reference,
            reference_key=ref_key,
            reference=encoding,
            challenge=challenge,
        )
        self._attempts[attempt.id] = attempt
        self._by_contact[view.id] = attempt.id
        async with self.db.transaction() as session:
            session.add(
                Verification(
                    id=attempt.id,
                    contact_id=view.id,
                    customer_id=view.customer_id,
                    agent_id=caller.user_id,
                    reference_kind=reference,
                    reference_key=ref_key,
                    challenge=",".join(challenge.steps),
                    started_at=datetime.now(UTC),
                    state="running",
                    threshold=self.calibration.threshold,
                )
            )
            await session.flush()
            await append(
                session,
                "verify.started",
                {
                    "attempt_id": attempt.id,
                    "reference": reference,
                    "reference_evidence": ref_key,
                    "challenge": list(challenge.steps),
                    "threshold": self.calibration.threshold,
                },
                actor=caller.actor,
                session_ref=view.id,
            )
        attempt.task = asyncio.create_task(self._run(attempt, tap), name=f"verify-{attempt.id[:8]}")

    async def cancel(self, caller: Caller, view: ContactView) -> None:
        attempt_id = self._by_contact.get(view.id)
        if attempt_id is None:
            raise VerifyError(p.ErrorCode.OUT_OF_ORDER, "no verification is running")
        attempt = self._attempts[attempt_id]
        attempt.state = "cancelled"
        if attempt.task is not None:
            attempt.task.cancel()

    async def _run(self, attempt: Attempt, tap: Any) -> None:
        monitor = LivenessMonitor(attempt.challenge)
        tracker = FaceTracker()
        last_arrival = 0.0
        last_encode = 0.0
        last_progress = 0.0
        report: QualityReport | None = None
        try:
            while True:
                if not monitor.collecting(time.monotonic() - attempt.started):
                    break
                try:
                    async with asyncio.timeout(FRAME_TIMEOUT_S):
                        frame = await tap.next_frame()
                except TimeoutError:
                    continue
                if frame.arrival <= last_arrival:
                    # same frame as last time (media timestamps may restart, so compare
                    # arrival times); wait a little for the next one
                    await asyncio.sleep(0.02)
                    continue
                last_arrival = frame.arrival
                rgb = fit_frame(frame.to_rgb())
                tracker, current = await self.pool.run(track_frame, tracker, rgb)
                report = current
                t = time.monotonic() - attempt.started
                attempt.frames += 1
                if current.landmarks is not None:
                    monitor.feed(
                        Observation(
                            t, current.landmarks, (rgb.shape[1], rgb.shape[0]), current.face_motion
                        )
                    )
                if (
                    current.ok
                    and current.box is not None
                    and current.landmarks is not None
                    and len(attempt.encodings) < MAX_LIVE_ENCODINGS
                    and t - last_encode >= ENCODE_EVERY_S
                ):
                    attempt.encodings.append(
                        await self.pool.run(encode_live, rgb, current.box, current.landmarks)
                    )
                    attempt.good_frames += 1
                    last_encode = t
                    if current.sharpness > attempt.best_sharpness:
                        attempt.best_sharpness = current.sharpness
                        attempt.best_frame = rgb
                if t - last_progress >= PROGRESS_EVERY_S:
                    last_progress = t
                    await self._progress(attempt, monitor, report)
                if attempt.encodings and not monitor.collecting(t):
                    break
            await self._finish(attempt, monitor, report)
        except asyncio.CancelledError:
            await self._end(attempt, "cancelled", monitor, report)
            raise
        except TapClosedError:
            await self._end(attempt, "failed", monitor, report)
        except Exception:
            logger.exception("verification attempt %s failed", attempt.id[:8])
            await self._end(attempt, "failed", monitor, report)

    def _steps(self, attempt: Attempt, monitor: LivenessMonitor) -> list[p.VerifyStep]:
        s = monitor.session
        out = []
        for i, step in enumerate(attempt.challenge.steps):
            if i < s.completed:
                status = "passed"
            elif i == s.completed and s.status == "running":
                status = "current"
            elif i == s.completed and s.status in ("failed", "timeout"):
                status = "failed"
            else:
                status = "pending"
            out.append(p.VerifyStep(step=step, status=status))  # type: ignore[arg-type]
        return out

    async def _progress(
        self,
        attempt: Attempt,
        monitor: LivenessMonitor,
        report: QualityReport | None,
        state: str = "running",
    ) -> None:
        remaining = max(0.0, attempt.challenge.time_limit - (time.monotonic() - attempt.started))
        frame = p.VerifyProgress(
            contact_id=attempt.view.id,
            attempt_id=attempt.id,
            state=state,  # type: ignore[arg-type]
            face=bool(report and report.landmarks is not None),
            guidance=list(report.guidance)[:6] if report else [],
            steps=self._steps(attempt, monitor),
            good_frames=attempt.good_frames,
            remaining_s=round(remaining, 1),
        )
        await self._both(attempt.view, frame)

    async def _end(
        self, attempt: Attempt, state: str, monitor: LivenessMonitor, report: QualityReport | None
    ) -> None:
        self._by_contact.pop(attempt.view.id, None)
        attempt.state = state
        async with self.db.transaction() as session:
            row = await session.get(Verification, attempt.id)
            if row is not None:
                row.state = state
                row.finished_at = datetime.now(UTC)
            await append(
                session, f"verify.{state}", {"attempt_id": attempt.id}, session_ref=attempt.view.id
            )
        await self._progress(attempt, monitor, report, state=state)

    async def _finish(
        self, attempt: Attempt, monitor: LivenessMonitor, report: QualityReport | None
    ) -> None:
        self._by_contact.pop(attempt.view.id, None)
        liveness = monitor.result()
        decision = (
            decide(attempt.reference, attempt.encodings, self.calibration)
            if attempt.encodings
            else None
        )
        live_sha256: str | None = None
        if attempt.best_frame is not None:
            data = await asyncio.to_thread(_jpeg, attempt.best_frame)
            live_sha256 = hashlib.sha256(data).hexdigest()
            attempt.live_key = await asyncio.to_thread(self.evidence.put, data, kind="snapshot")
        attempt.state = "finished"
        distance = float(decision.distance) if decision is not None else None
        match = bool(decision.match) if decision is not None else False
        async with self.db.transaction() as session:
            row = await session.get(Verification, attempt.id)
            assert row is not None
            row.state = "finished"
            row.finished_at = datetime.now(UTC)
            row.distance = distance
            row.match = match
            row.liveness_passed = liveness.passed
            row.liveness_reasons = "\n".join(liveness.reasons)
            row.good_frames = attempt.good_frames
            row.live_key = attempt.live_key
            await append(
                session,
                "verify.attempt_result",
                {
                    "attempt_id": attempt.id,
                    "distance": None if distance is None else round(distance, 4),
                    "threshold": self.calibration.threshold,
                    "match": match,
                    "liveness_passed": liveness.passed,
                    "liveness_reasons": list(liveness.reasons),
                    "challenge": list(attempt.challenge.steps),
                    "completed_steps": liveness.completed_steps,
                    "good_frames": attempt.good_frames,
                    "frames_analysed": attempt.frames,
                    "face_frames": monitor.passive.frames,
                    "seconds": round(time.monotonic() - attempt.started, 2),
                    "reference_evidence": attempt.reference_key,
                    "live_evidence": attempt.live_key,
                    "live_sha256": live_sha256,
                },
                session_ref=attempt.view.id,
            )
        await self._progress(attempt, monitor, report, state="finished")
        base = f"/api/verifications/{attempt.id}/snapshot"
        await self.hub.send(
            attempt.agent_id,
            p.VerifyResult(
                contact_id=attempt.view.id,
                attempt_id=attempt.id,
                match=match,
                distance=None if distance is None else round(distance, 4),
                threshold=self.calibration.threshold,
                meaning=self.calibration.meaning[:400],
                liveness_passed=liveness.passed,
                liveness_reasons=[r[:120] for r in liveness.reasons][:20],
                reference_url=f"{base}/reference",
                live_url=f"{base}/live" if attempt.live_key else None,
            ),
        )

    async def decide(
        self, caller: Caller, view: ContactView, attempt_id: str, approve: bool, reason: str | None
    ) -> None:
        attempt = self._attempts.get(attempt_id)
        if attempt is None or attempt.view.id != view.id:
            raise VerifyError(p.ErrorCode.NOT_FOUND, "no such verification attempt")
        if attempt.state != "finished":
            raise VerifyError(p.ErrorCode.OUT_OF_ORDER, "the attempt has not finished")
        if not approve and not (reason and reason.strip()):
            raise VerifyError(p.ErrorCode.INVALID_MESSAGE, "a rejection needs a reason")
        now = datetime.now(UTC)
        outcome: Literal["verified", "rejected"] = "verified" if approve else "rejected"
        async with self.db.transaction() as session:
            row = await session.get(Verification, attempt_id)
            assert row is not None
            if row.decision is not None:
                raise VerifyError(p.ErrorCode.OUT_OF_ORDER, "the attempt was already decided")
            row.decision = "approved" if approve else "rejected"
            row.decided_at = now
            row.decision_reason = reason
            if approve:
                contact = await session.get(Contact, view.id)
                assert contact is not None
                contact.verified_at = now
                contact.verified_by = caller.user_id
                contact.verification_id = attempt_id
            await append(
                session,
                "verify.decision",
                {
                    "attempt_id": attempt_id,
                    "outcome": outcome,
                    "reason": reason,
                    "match": row.match,
                    "liveness_passed": row.liveness_passed,
                    "distance": row.distance,
                },
                actor=caller.actor,
                session_ref=view.id,
            )
        attempt.state = "decided"
        await self._both(
            view,
            p.VerifyOutcome(
                contact_id=view.id, attempt_id=attempt_id, outcome=outcome, at=now, reason=reason
            ),
        )

    async def snapshot(self, caller: Caller, attempt_id: str, kind: str) -> bytes:
        """The reference or live snapshot of an attempt, for the agent who ran it."""
        async with self.db.sessions() as session:
            row = await session.get(Verification, attempt_id)
        if row is None or row.agent_id != caller.user_id:
            raise VerifyError(p.ErrorCode.NOT_FOUND, "no such verification attempt")
        key = row.reference_key if kind == "reference" else row.live_key
        if key is None:
            raise VerifyError(p.ErrorCode.NOT_FOUND, "no such snapshot")
        data = await asyncio.to_thread(self.evidence.get, key)
        async with self.db.transaction() as session:
            await append(
                session,
                "evidence.viewed",
                {"attempt_id": attempt_id, "kind": kind},
                actor=caller.actor,
                session_ref=row.contact_id,
            )
        return data
