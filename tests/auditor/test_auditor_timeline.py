"""A contact's timeline, its evidence snapshots and the evidence export, as an auditor."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import update

from tests.auditor.conftest import People, Seeder, events_of, signed_client
from vbank.calls import CONSENT_VERSION
from vbank.contact.models import ChatMessage
from vbank.db import Database


async def _timeline(client: TestClient[Any, Any], contact_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/auditor/sessions/{contact_id}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_timeline_lists_every_event_in_order_with_what_it_refers_to(
    auditor: TestClient[Any, Any], people: People, seed: Seeder
) -> None:
    cid = await seed.contact(
        people.kate,
        people.ana,
        closed=False,
        messages=(("customer", "I lost my card 💳"), ("agent", "Let me check, Kate.")),
    )
    await seed.consent(cid, people.kate)
    await seed.recording(cid, b"customer-bytes", side="customer")
    await seed.recording(cid, b"agent-bytes", side="agent", encrypted=True)
    attempt = await seed.verification(cid, people.kate, people.ana)

    body = await _timeline(auditor, cid)
    events = body["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert [e["type"] for e in events] == [
        "contact.queued",
        "contact.assigned",
        "chat.message",
        "chat.message",
        "video.consent",
        "recording.finalised",
        "recording.finalised",
        "verify.started",
        "verify.attempt_result",
        "verify.decision",
    ]
    queued = events[0]
    assert queued["actor_role"] == "customer"
    assert queued["actor"] == {"id": people.kate, "name": "Kate Hill", "role": "customer"}
    assert queued["ts"].endswith("+00:00") and isinstance(queued["ts_us"], int)
    assert events[1]["actor_role"] == "system" and events[1]["actor"] is None

    chat = [e["chat"] for e in events if e["type"] == "chat.message"]
    assert [c["text"] for c in chat] == ["I lost my card 💳", "Let me check, Kate."]
    assert [c["sender_role"] for c in chat] == ["customer", "agent"]
    assert all(c["text_matches"] for c in chat)
    assert chat[1]["sender"]["name"] == "Ana Agent"

    consent = events[4]["consent"]
    assert consent["version"] == CONSENT_VERSION and consent["accepted"] is True
    assert "record" in consent["text"]

    recs = body["recordings"]
    assert [(r["attempt"], r["side"], r["encrypted"]) for r in recs] == [
        (1, "customer", False),
        (1, "agent", True),
    ]
    assert recs[0]["url"] == f"/api/auditor/recordings/{cid}/1/customer"
    assert events[5]["recording"]["url"] == recs[0]["url"]
    assert recs[1]["bytes"] == len(b"agent-bytes")

    decision = events[9]
    assert decision["payload"]["outcome"] == "verified"
    assert decision["actor"]["name"] == "Ana Agent"
    v = decision["verification"]
    assert v["attempt_id"] == attempt
    assert (v["distance"], v["threshold"], v["match"]) == (0.31, 0.5, True)
    assert v["liveness_passed"] is True and v["challenge"] == ["blink", "turn_left"]
    assert v["decision"] == "verified" and v["decision_reason"] == "looks right"
    assert v["snapshots"] == {
        "reference": f"/api/auditor/snapshots/{attempt}/reference",
        "live": f"/api/auditor/snapshots/{attempt}/live",
    }
    assert body["verifications"] == [v]

    contact = body["contact"]
    assert contact["contact_id"] == cid
    assert contact["customer"]["name"] == "Kate Hill" and contact["agent"]["name"] == "Ana Agent"
    assert contact["verified_at"] is not None and contact["verification_id"] == attempt
    assert contact["messages"] == 2


async def test_a_changed_chat_line_no_longer_matches_its_event(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, db: Database
) -> None:
    cid = await seed.contact(people.kate, people.ana, messages=(("customer", "send 100"),))
    async with db.transaction() as s:
        await s.execute(update(ChatMessage).values(text="send 10000"))
    [msg] = [e for e in (await _timeline(auditor, cid))["events"] if e["type"] == "chat.message"]
    assert msg["chat"]["text"] == "send 10000" and msg["chat"]["text_matches"] is False


async def test_integrity_badge(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = await seed.contact(people.kate, people.ana)
    integrity = (await _timeline(auditor, cid))["integrity"]
    assert integrity["status"] in ("ok", "pending", "not_checkpointed", "error")
    if integrity["status"] != "error":  # "error": the verifier is there but its keys are not
        assert integrity["ok"] in (True, None)
    # without the verifier the badge says so instead of claiming anything
    monkeypatch.setattr(importlib.util, "find_spec", _hide("audit.verifier"))
    integrity = (await _timeline(auditor, cid))["integrity"]
    assert integrity["status"] == "not_checkpointed" and integrity["ok"] is None


async def test_integrity_uses_the_verifier_when_it_is_installed(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = await seed.contact(people.kate, people.ana)
    fake = types.ModuleType("audit.verifier")
    fake.__spec__ = importlib.machinery.ModuleSpec("audit.verifier", None)
    seen: list[str] = []

    async def verify_contact(session: Any, contact_id: str) -> Any:
        seen.append(contact_id)
        return types.SimpleNamespace(ok=False, reason="event 7 was edited", checkpoint_size=42)

    fake.verify_contact = verify_contact  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "audit.verifier", fake)
    integrity = (await _timeline(auditor, cid))["integrity"]
    assert seen == [cid]
    assert integrity["status"] == "failed" and integrity["ok"] is False
    assert integrity["reason"] == "event 7 was edited" and integrity["checkpoint_size"] == 42

    async def verify_pending(session: Any, contact_id: str) -> Any:
        return types.SimpleNamespace(ok=True, reason="", checkpoint_size=40, pending=2)

    fake.verify_contact = verify_pending  # type: ignore[attr-defined]
    integrity = (await _timeline(auditor, cid))["integrity"]
    assert (integrity["status"], integrity["pending"]) == ("pending", 2)

    def verify_all(session: Any, contact_id: str) -> Any:  # a synchronous verifier is fine too
        return types.SimpleNamespace(ok=True, reason="", checkpoint_size=90, pending=0)

    fake.verify_contact = verify_all  # type: ignore[attr-defined]
    integrity = (await _timeline(auditor, cid))["integrity"]
    assert (integrity["status"], integrity["ok"]) == ("ok", True)


async def test_viewing_a_timeline_is_audited(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, db: Database
) -> None:
    cid = await seed.contact(people.kate, people.ana, messages=(("customer", "hi"),))
    first = await _timeline(auditor, cid)
    [event] = await events_of(db, cid, "auditor.viewed")
    assert (event.actor_id, event.actor_role) == (people.auditor, "auditor")
    assert json.loads(event.payload) == {"what": "timeline", "events": len(first["events"])}
    # the next view shows the earlier one: auditors see who looked before them
    second = await _timeline(auditor, cid)
    assert second["events"][-1]["type"] == "auditor.viewed"
    assert second["events"][-1]["actor"]["name"] == "Audrey Auditor"


async def test_unknown_contact_is_404(auditor: TestClient[Any, Any], db: Database) -> None:
    for path in (
        "/api/auditor/sessions/0123456789abcdef0123456789abcdef",
        "/api/auditor/sessions/bad%2Fid",
        "/api/auditor/sessions/" + "a" * 65,
    ):
        resp = await auditor.get(path)
        assert resp.status == 404, path
        assert (await resp.json())["code"] == "not_found"
    assert await events_of(db, "0123456789abcdef0123456789abcdef", "auditor.viewed") == []


async def test_agents_and_customers_get_403(
    aiohttp_client: Any, app: web.Application, people: People, seed: Seeder
) -> None:
    cid = await seed.contact(people.kate, people.ana)
    attempt = await seed.verification(cid, people.kate, people.ana)
    await seed.recording(cid, b"bytes")
    for username in ("ana", "kate"):
        client = await signed_client(aiohttp_client, app, username)
        for path in (
            f"/api/auditor/sessions/{cid}",
            f"/api/auditor/recordings/{cid}/1/customer",
            f"/api/auditor/snapshots/{attempt}/reference",
        ):
            resp = await client.get(path)
            assert resp.status == 403, (username, path)
        resp = await client.post(
            f"/api/auditor/sessions/{cid}/export", headers={"X-CSRF-Token": client.csrf}
        )
        assert resp.status == 403


# ------------------------------------------------------------------------------ snapshots


async def test_snapshots_are_decrypted_and_each_view_is_audited(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, db: Database
) -> None:
    cid = await seed.contact(people.kate, people.ana)
    png = b"\x89PNG\r\n\x1a\n" + b"p" * 50
    attempt = await seed.verification(cid, people.kate, people.ana, reference=png)
    resp = await auditor.get(f"/api/auditor/snapshots/{attempt}/reference")
    assert resp.status == 200
    assert resp.content_type == "image/png"
    assert await resp.read() == png
    assert resp.headers["Cache-Control"] == "no-store"
    resp = await auditor.get(f"/api/auditor/snapshots/{attempt}/live")
    assert resp.content_type == "image/jpeg"
    assert await resp.read() == b"\xff\xd8\xfflive-jpeg"
    views = [json.loads(e.payload) for e in await events_of(db, cid, "auditor.viewed")]
    assert views == [
        {"what": "snapshot", "attempt_id": attempt, "kind": "reference"},
        {"what": "snapshot", "attempt_id": attempt, "kind": "live"},
    ]


async def test_missing_snapshots_are_404(
    auditor: TestClient[Any, Any], people: People, seed: Seeder
) -> None:
    cid = await seed.contact(people.kate, people.ana)
    attempt = await seed.verification(cid, people.kate, people.ana, live=None)
    for path in (
        f"/api/auditor/snapshots/{attempt}/live",  # the attempt never got a good frame
        f"/api/auditor/snapshots/{attempt}/selfie",
        "/api/auditor/snapshots/0123456789abcdef0123456789abcdef/reference",
        "/api/auditor/snapshots/..%2F..%2Fetc/reference",
    ):
        resp = await auditor.get(path)
        assert resp.status == 404, path


# ------------------------------------------------------------------------------ export


async def test_export_without_the_exporter_is_a_clear_503(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", _hide("audit.bundle"))
    cid = await seed.contact(people.kate, people.ana)
    body = await _timeline(auditor, cid)
    assert body["export_available"] is False
    resp = await auditor.post(
        f"/api/auditor/sessions/{cid}/export", headers={"X-CSRF-Token": auditor.csrf}
    )
    assert resp.status == 503
    problem = await resp.json()
    assert problem["code"] == "export_unavailable" and "not available" in problem["detail"]
    resp = await auditor.post(
        "/api/auditor/sessions/0123456789abcdef0123456789abcdef/export",
        headers={"X-CSRF-Token": auditor.csrf},
    )
    assert resp.status == 404


def _hide(name: str) -> Any:
    real = importlib.util.find_spec

    def find_spec(fullname: str, package: str | None = None) -> Any:
        return None if fullname == name else real(fullname, package)

    return find_spec


def _fake_bundle(monkeypatch: pytest.MonkeyPatch, exporter: Any) -> None:
    fake = types.ModuleType("audit.bundle")
    fake.__spec__ = importlib.machinery.ModuleSpec("audit.bundle", None)

    class BundleError(RuntimeError):
        pass

    fake.BundleError = BundleError  # type: ignore[attr-defined]
    fake.export_bundle = exporter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "audit.bundle", fake)


async def test_export_returns_the_bundle_and_is_audited(
    auditor: TestClient[Any, Any],
    people: People,
    seed: Seeder,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = await seed.contact(people.kate, people.ana)
    calls: list[tuple[str, Path, Any]] = []

    async def export_bundle(
        db: Any, contact_id: str, out: Path, settings: Any, *, keys: Any = None, actor: Any = None
    ) -> Any:
        calls.append((contact_id, Path(out), actor))
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("manifest.json", json.dumps({"contact": contact_id}))
        return types.SimpleNamespace(
            events=4, checkpoint_size=40, files=("manifest.json",), missing=()
        )

    _fake_bundle(monkeypatch, export_bundle)
    assert (await _timeline(auditor, cid))["export_available"] is True
    resp = await auditor.post(
        f"/api/auditor/sessions/{cid}/export", headers={"X-CSRF-Token": auditor.csrf}
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/zip"
    assert f"vbank-evidence-{cid}.zip" in resp.headers["Content-Disposition"]
    data = await resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert json.loads(z.read("manifest.json")) == {"contact": cid}
    [(contact_id, out, actor)] = calls
    assert contact_id == cid and actor is None  # one export, one event: ours
    assert not out.exists()  # the decrypted bundle does not outlive the response
    [event] = await events_of(db, cid, "auditor.export")
    payload = json.loads(event.payload)
    assert payload == {
        "bytes": len(data),
        "sha256": resp.headers["X-Bundle-SHA256"],
        "events": 4,
        "checkpoint_size": 40,
        "files": 1,
        "missing": 0,
    }
    assert event.actor_id == people.auditor
    # without the CSRF token an export is refused
    resp = await auditor.post(f"/api/auditor/sessions/{cid}/export")
    assert resp.status == 403


async def test_a_refused_export_is_a_409_and_not_audited(
    auditor: TestClient[Any, Any],
    people: People,
    seed: Seeder,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = await seed.contact(people.kate, people.ana)

    async def export_bundle(db: Any, contact_id: str, out: Path, settings: Any) -> Any:
        raise sys.modules["audit.bundle"].BundleError("the stored log does not match")

    _fake_bundle(monkeypatch, export_bundle)
    resp = await auditor.post(
        f"/api/auditor/sessions/{cid}/export", headers={"X-CSRF-Token": auditor.csrf}
    )
    assert resp.status == 409
    problem = await resp.json()
    assert problem["code"] == "export_failed" and "does not match" in problem["detail"]
    assert await events_of(db, cid, "auditor.export") == []


async def test_the_real_bundle_verifies(
    auditor: TestClient[Any, Any], people: People, seed: Seeder, db: Database, tmp_path: Path
) -> None:
    """With the exporter installed, the zip the auditor gets verifies offline."""
    if importlib.util.find_spec("audit.bundle") is None:
        pytest.skip("audit.bundle is not installed yet")
    bundle = importlib.import_module("audit.bundle")
    cid = await seed.contact(people.kate, people.ana, messages=(("customer", "hello"),))
    await seed.recording(cid, b"recorded bytes", encrypted=True)
    resp = await auditor.post(
        f"/api/auditor/sessions/{cid}/export", headers={"X-CSRF-Token": auditor.csrf}
    )
    assert resp.status == 200, await resp.text()
    data = await resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
    assert "events.jsonl" in names and "manifest.json" in names
    if hasattr(bundle, "verify_bundle"):
        path = tmp_path / "bundle.zip"
        path.write_bytes(data)
        report = bundle.verify_bundle(path)
        assert report.ok, report
    [event] = await events_of(db, cid, "auditor.export")
    assert json.loads(event.payload)["sha256"] == resp.headers["X-Bundle-SHA256"]
