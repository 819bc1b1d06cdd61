"""The `vbank` command as an operator runs it: real subprocesses against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL

VBANK = [sys.executable, "-m", "vbank.cli"]


def run(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VBANK, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["demo"],
        ["migrate"],
        ["user"],
        ["user", "add"],
        ["audit"],
        ["audit", "verify"],
    ],
)
def test_help_on_every_command(args: list[str]) -> None:
    result = run([*args, "--help"], {})
    assert result.returncode == 0, result.stderr
    assert "usage: vbank" in result.stdout


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "VBANK_DATA_DIR": str(tmp_path / "data"),
        "VBANK_DATABASE_URL": database_url,
        "VBANK_LOG_JSON": "false",
    }


def test_migrate_user_add_and_verify(tmp_path: Path, cli_env: dict[str, str]) -> None:
    if not PG_ADMIN_URL:
        cli_env["VBANK_DATABASE_URL"] = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    result = run(["migrate"], cli_env)
    assert result.returncode == 0, result.stderr
    result = run(
        [
            "user",
            "add",
            "agent.zoe",
            "--role",
            "agent",
            "--skills",
            "cards,wealth",
            "--capacity",
            "3",
        ],
        {**cli_env, "VBANK_NEW_PASSWORD": "a-strong-password-1"},
    )
    assert result.returncode == 0, result.stderr
    assert "created agent agent.zoe" in result.stdout
    # the secret was generated, private, and never printed
    secret = (Path(cli_env["VBANK_DATA_DIR"]) / "secret.key").read_text().strip()
    assert secret not in result.stdout + result.stderr
    # bad input: a duplicate, an unknown skill, a weak password, an unknown role
    dup = run(
        ["user", "add", "agent.zoe", "--role", "agent", "--skills", "cards"],
        {**cli_env, "VBANK_NEW_PASSWORD": "a-strong-password-1"},
    )
    assert dup.returncode == 2 and "already taken" in dup.stderr
    bad_skill = run(
        ["user", "add", "agent.x", "--role", "agent", "--skills", "astrology"],
        {**cli_env, "VBANK_NEW_PASSWORD": "a-strong-password-1"},
    )
    assert bad_skill.returncode == 2 and "unknown skills: astrology" in bad_skill.stderr
    weak = run(
        ["user", "add", "cust.x", "--role", "customer"], {**cli_env, "VBANK_NEW_PASSWORD": "short"}
    )
    assert weak.returncode == 2 and "at least 10 characters" in weak.stderr
    role = run(["user", "add", "x.y", "--role", "root"], cli_env)
    assert role.returncode == 2 and "invalid choice" in role.stderr
    verify = run(["audit", "verify"], cli_env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] is True and report["events"] == 1


def test_audit_verify_fails_loudly_on_an_edit(tmp_path: Path, cli_env: dict[str, str]) -> None:
    if not PG_ADMIN_URL:
        cli_env["VBANK_DATABASE_URL"] = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    assert run(["migrate"], cli_env).returncode == 0
    for name in ("cust.one", "cust.two", "cust.three"):
        r = run(
            ["user", "add", name, "--role", "customer"],
            {**cli_env, "VBANK_NEW_PASSWORD": "a-strong-password-1"},
        )
        assert r.returncode == 0, r.stderr
    from sqlalchemy import create_engine, text

    from vbank.db import sync_url

    engine = create_engine(sync_url(cli_env["VBANK_DATABASE_URL"]))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET payload = :p WHERE seq = 2"),
            {"p": '{"role":"agent","user_id":2}'},
        )
    engine.dispose()
    verify = run(["audit", "verify"], cli_env)
    assert verify.returncode == 1
    report = json.loads(verify.stdout)
    assert report == {
        "ok": False,
        "events": 1,
        "first_bad_seq": 2,
        "reason": "event content does not match its hash",
    }


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = {
        "VBANK_DATA_DIR": str(tmp_path / "d"),
        "VBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
    }
    result = run(["serve"], env)
    assert result.returncode != 0
    assert "run `vbank migrate` first" in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_demo_serves_signs_in_and_shuts_down_gracefully(tmp_path: Path) -> None:
    """`vbank demo` on the embedded default: banner, sign-in, chain verifies, SIGTERM exits 0."""
    import signal
    import time
    import urllib.request

    port = _free_port()
    env = {
        **os.environ,
        "VBANK_DATA_DIR": str(tmp_path / "var"),
        "VBANK_PORT": str(port),
        "VBANK_LOG_JSON": "true",
    }
    env.pop("VBANK_DATABASE_URL", None)
    proc = subprocess.Popen(
        [*VBANK, "demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                    assert json.load(resp)["status"] == "ready"
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "demo did not become ready"
                time.sleep(0.3)
        req = urllib.request.Request(
            base + "/api/auth/signin",
            data=json.dumps({"username": "kate", "password": "vbank-demo-2026"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["home"] == "/customer"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"vbank serving on http://127.0.0.1:{port}" in out
    assert "password for all: vbank-demo-2026" in out
    for name in ("kate", "sandra", "lin", "ana", "ben", "chen", "ida", "sam"):
        assert f" {name} " in out
    # no personal data or secrets in the logs
    secret = (tmp_path / "var" / "secret.key").read_text().strip()
    assert secret not in err and "vbank-demo-2026" not in err and "kate" not in err
    verify = run(["audit", "verify"], {"VBANK_DATA_DIR": str(tmp_path / "var")})
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"]
