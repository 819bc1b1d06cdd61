"""`vbank audit …` as an operator and an auditor use it (in-process: the commands are plain
functions; `tests/foundation/test_cli.py` covers real subprocesses)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.audit.conftest import fill
from tests.audit.test_bundle import make_contact
from vbank.cli import main
from vbank.config import Settings
from vbank.db import Database, sync_url


def vbank(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    try:
        rc = main(args)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    out = capsys.readouterr()
    try:
        body = json.loads(out.out) if out.out.strip().startswith(("{", "[")) else out.out
    except ValueError:
        body = out.out
    return rc, body, out.err


@pytest.mark.parametrize(
    "command",
    [
        "verify",
        "export",
        "verify-bundle",
        "public-keys",
        "checkpoint",
        "rotate-master-key",
        "purge-expired",
    ],
)
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = vbank(["audit", command, "--help"], capsys)
    assert rc == 0 and "usage: vbank audit" in out


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Settings:
    for name in ("VBANK_AUDIT_KEYS", "VBANK_MASTER_KEY", "VBANK_WITNESS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VBANK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VBANK_DATABASE_URL", database_url)
    monkeypatch.setenv("VBANK_WITNESS_FILE", str(tmp_path / "witness" / "log.jsonl"))
    monkeypatch.setenv("VBANK_LOG_JSON", "false")
    return Settings.from_env()


def test_operator_and_auditor_round_trip(
    env: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def seed() -> str:
        db = Database(env.database_url)
        try:
            await fill(db, 6)
            return (await make_contact(db, env)).id
        finally:
            await db.close()

    contact = asyncio.run(seed())  # the bundle export inside signed a first checkpoint
    asyncio.run(fill_and_close(env.database_url, 3))
    rc, out, _ = vbank(["audit", "checkpoint"], capsys)
    assert rc == 0 and out["signed"] is True
    rc, out, _ = vbank(["audit", "verify", "--details"], capsys)
    assert rc == 0 and out["ok"] and out["checkpoints"] == 2 and out["witnessed"] >= 1, out
    assert out["pending"] == 0 and out["consistency_proofs"] == 1
    rc, out, _ = vbank(["audit", "verify"], capsys)
    assert out == {"ok": True, "events": out["events"], "first_bad_seq": None, "reason": ""}

    log, keys, bundle = tmp_path / "log.jsonl", tmp_path / "keys.json", tmp_path / "b.zip"
    assert vbank(["audit", "export", "-o", str(log)], capsys)[0] == 0
    assert vbank(["audit", "public-keys", "-o", str(keys)], capsys)[0] == 0
    rc, out, _ = vbank(["audit", "export", "--contact", contact, "-o", str(bundle)], capsys)
    assert rc == 0 and out["contact"] == contact and out["files"] >= 6, out
    rc, _, err = vbank(["audit", "export", "--contact", "nobody", "-o", str(bundle) + "x"], capsys)
    assert rc == 1 and "no audit events" in err

    # the auditor's machine: no configuration, only the bank's public keys
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    monkeypatch.chdir(auditor)
    for name in ("VBANK_DATA_DIR", "VBANK_DATABASE_URL", "VBANK_WITNESS_FILE"):
        monkeypatch.delenv(name)
    rc, out, _ = vbank(
        ["audit", "verify", "--from-export", str(log), "--keys", str(keys), "--details"], capsys
    )
    assert rc == 0 and out["ok"] and out["checkpoints"] == 2, out
    rc, out, err = vbank(["audit", "verify-bundle", str(bundle), "--keys", str(keys)], capsys)
    assert rc == 0 and out["ok"] and not out["keys_from_bundle"] and not err
    rc, out, err = vbank(["audit", "verify-bundle", str(bundle)], capsys)
    assert rc == 0 and out["keys_from_bundle"] and "not that the bank made it" in err
    assert list(auditor.iterdir()) == []  # nothing generated on the auditor's machine
    lines = log.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"seq":3', b'"seq":4')
    log.write_bytes(b"".join(lines))
    rc, out, _ = vbank(["audit", "verify", "--from-export", str(log), "--keys", str(keys)], capsys)
    assert rc == 1 and out["first_bad_seq"] == 3
    rc, out, _ = vbank(["audit", "verify-bundle", str(log), "--keys", str(keys)], capsys)
    assert rc == 1 and not out["ok"]


async def fill_and_close(url: str, n: int) -> None:
    db = Database(url)
    try:
        await fill(db, n, start=100)
    finally:
        await db.close()


def test_a_rewritten_database_fails_against_the_witness(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(fill_and_close(env.database_url, 8))
    assert vbank(["audit", "checkpoint"], capsys)[0] == 0
    assert env.witness_file is not None and env.witness_file.exists()
    engine = create_engine(sync_url(env.database_url))
    with engine.begin() as conn:  # the whole database rewritten (the key was stolen too)
        conn.execute(text("DELETE FROM audit_checkpoints"))
        conn.execute(text("DELETE FROM audit_events"))
        conn.execute(text("UPDATE audit_head SET seq = 0, hash = :h"), {"h": "0" * 64})
    engine.dispose()
    asyncio.run(fill_and_close(env.database_url, 8))
    witness = env.witness_file.read_text()
    env.witness_file.rename(env.witness_file.with_suffix(".bak"))
    assert vbank(["audit", "checkpoint"], capsys)[0] == 0
    assert vbank(["audit", "verify"], capsys)[0] == 0  # the database alone looks fine
    env.witness_file.write_text(witness)
    rc, out, _ = vbank(["audit", "verify"], capsys)
    assert rc == 1 and out["first_bad_seq"] == 1 and "witness" in out["reason"], out
