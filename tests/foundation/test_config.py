from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from vbank.config import ConfigError, Settings


def test_generated_secrets_are_private_and_reused(tmp_path: Path) -> None:
    env = {"VBANK_DATA_DIR": str(tmp_path)}
    first = Settings.from_env(env)
    for name in ("secret.key", "master.key"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, name
    second = Settings.from_env(env)
    assert first.secret_key == second.secret_key
    assert first.master_keys == second.master_keys
    assert len(first.master_keys[0][1]) == 32
    assert first.database_url == f"sqlite:///{tmp_path / 'vbank.sqlite3'}"


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    s = Settings.from_env(
        {"VBANK_DATA_DIR": str(tmp_path), "VBANK_TURN_SECRET": "turn-secret-value"}
    )
    text = repr(s)
    assert s.secret_key not in text
    assert "turn-secret-value" not in text
    assert base64.b64encode(s.master_keys[0][1]).decode() not in text


def test_group_readable_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("x" * 64)
    (tmp_path / "secret.key").chmod(0o644)
    with pytest.raises(ConfigError, match="must not be readable"):
        Settings.from_env({"VBANK_DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("VBANK_PORT", "eighty", "VBANK_PORT must be an integer"),
        ("VBANK_COOKIE_SECURE", "maybe", "VBANK_COOKIE_SECURE must be true or false"),
        ("VBANK_SECRET_KEY", "short", "at least 32 characters"),
        ("VBANK_MASTER_KEY", "k1:notbase64!!", "VBANK_MASTER_KEY must be"),
        ("VBANK_MASTER_KEY", "k1:" + base64.b64encode(b"x" * 16).decode(), "VBANK_MASTER_KEY"),
        ("VBANK_CHAT_WRITER", "fork", "VBANK_CHAT_WRITER must be process or thread"),
    ],
)
def test_malformed_settings_name_the_variable(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"VBANK_DATA_DIR": str(tmp_path), name: value})


def test_environment_overrides(tmp_path: Path) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    s = Settings.from_env(
        {
            "VBANK_DATA_DIR": str(tmp_path),
            "VBANK_DATABASE_URL": "postgresql+psycopg://u:p@db:5432/vbank",
            "VBANK_SECRET_KEY": "s" * 40,
            "VBANK_MASTER_KEY": f"new:{key},old:{key}",
            "VBANK_PORT": "9000",
            "VBANK_COOKIE_SECURE": "true",
            "VBANK_CHAT_WRITER": "thread",
            "VBANK_TURN_URLS": "turn:turn.example:3478, turns:turn.example:5349",
        }
    )
    assert s.database_url.startswith("postgresql+psycopg://")
    assert [k for k, _ in s.master_keys] == ["new", "old"]
    assert s.port == 9000 and s.cookie_secure and s.chat_writer == "thread"
    assert s.turn_urls == ("turn:turn.example:3478", "turns:turn.example:5349")
    assert not (tmp_path / "secret.key").exists()
