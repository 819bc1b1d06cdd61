"""Audit signing keys from configuration: format, windows, generation, never leaked."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit.keys import load_signing_key
from audit.signing import AuditKeyError, parse_audit_keys, registry_from_settings
from vbank.config import ConfigError, Settings

SEED = bytes(range(200, 232))
SEED_B64 = base64.b64encode(SEED).decode()  # contains '+' and '/'


def test_entries_with_windows_and_public_only_keys() -> None:
    old = load_signing_key("bank-audit", SEED)
    assert "+" in SEED_B64
    with pytest.raises(AuditKeyError, match="registered differently"):  # one key, two windows
        parse_audit_keys(
            f"bank-audit:{SEED_B64}:2025-01-01:20260201T000000Z,"
            f"bank-audit:{old.public.verifier_string()}:2024-01-01:2025-01-01"
        )
    other = load_signing_key("bank-audit", bytes(32))
    registry = parse_audit_keys(
        f"bank-audit:{SEED_B64}:2025-01-01:2026-02-01,"
        f"bank-audit:{other.public.verifier_string()}::2025-02-01"
    )
    assert len(registry) == 2
    at = datetime(2025, 6, 1, tzinfo=UTC)
    assert [k.key_id for k in registry.signers_at(at)] == [old.key_id]  # public keys never sign
    assert registry.signers_at(datetime(2026, 3, 1, tzinfo=UTC)) == []


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "name-only",
        f"n:{SEED_B64}:2025-13-01:",
        f"n:{SEED_B64}:2026-01-01:2025-01-01",
        "n:" + base64.b64encode(b"short").decode() + "::",
        f"bad name:{SEED_B64}::",
    ],
)
def test_malformed_keys_are_refused_without_echoing_the_seed(spec: str) -> None:
    with pytest.raises(AuditKeyError) as err:
        parse_audit_keys(spec)
    assert SEED_B64 not in str(err.value)


def test_a_key_is_generated_privately_and_reused(tmp_path: Path) -> None:
    env = {"VBANK_DATA_DIR": str(tmp_path)}
    first = Settings.from_env(env)
    path = tmp_path / "audit.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.audit_keys and first.audit_keys not in repr(first)
    again = Settings.from_env(env)
    a, b = registry_from_settings(first), registry_from_settings(again)
    assert [k.key_id for k in a] == [k.key_id for k in b]
    assert a.signers_at(datetime.now(UTC))


def test_settings_from_the_environment(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "VBANK_DATA_DIR": str(tmp_path),
            "VBANK_AUDIT_KEYS": f"bank-audit:{SEED_B64}::",
            "VBANK_AUDIT_ORIGIN": "bank.example/audit",
            "VBANK_CHECKPOINT_EVENTS": "50",
            "VBANK_CHECKPOINT_INTERVAL_S": "5",
            "VBANK_WITNESS_FILE": str(tmp_path / "w.jsonl"),
            "VBANK_WITNESS_URL": "https://witness.example/add",
            "VBANK_RETENTION_YEARS": "7",
        }
    )
    assert not (tmp_path / "audit.key").exists()
    assert (s.audit_origin, s.checkpoint_events, s.checkpoint_interval_s) == (
        "bank.example/audit",
        50,
        5.0,
    )
    assert s.witness_file == tmp_path / "w.jsonl" and s.witness_url.startswith("https://")
    assert s.retention_years == 7 and SEED_B64 not in repr(s)
    for name, value in (("VBANK_AUDIT_KEYS", "x:y"), ("VBANK_RETENTION_YEARS", "0")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({"VBANK_DATA_DIR": str(tmp_path), name: value})
