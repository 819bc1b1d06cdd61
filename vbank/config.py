"""Settings from the environment (``VBANK_*``) with embedded defaults.

The embedded default is a single process on SQLite and local files under the data
directory; production sets a PostgreSQL URL, secrets and a data directory.  Secrets
never appear in ``repr`` or logs.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SECRET_FILE = "secret.key"  # noqa: S105 - a file name, not a secret
MASTER_KEY_FILE = "master.key"
AUDIT_KEY_FILE = "audit.key"
DEFAULT_AUDIT_ORIGIN = "vbank.local/audit"
DEFAULT_WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _zone(value: str, name: str) -> str:
    """An IANA time zone name that this machine's zone database knows."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name} must be an IANA time zone such as Asia/Shanghai") from None
    return value.strip()


def _load_or_create_secret(data_dir: Path, name: str = SECRET_FILE, nbytes: int = 48) -> str:
    """Generate a secret once, store it with mode 0600, and reuse it afterwards."""
    path = data_dir / name
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path} must not be readable by group or others (mode {mode:o})")
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    if name == SECRET_FILE:
        value = secrets.token_urlsafe(nbytes)
    elif name == AUDIT_KEY_FILE:
        value = _new_audit_key()
    else:
        value = _new_master_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    logger.info("generated a new %s file in the data directory", name)
    return value


def load_or_create_secret(data_dir: Path, name: str) -> str:
    """The generated secret file ``name`` in ``data_dir`` (created with mode 0600 if absent)."""
    return _load_or_create_secret(data_dir, name)


def _new_master_key() -> str:
    return "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()


def _new_audit_key() -> str:
    # name:base64(Ed25519 seed):not_before:not_after (an open window); see audit/signing.py
    return "vbank-audit:" + base64.b64encode(secrets.token_bytes(32)).decode() + "::"


def parse_master_keys(value: str) -> tuple[tuple[str, bytes], ...]:
    """``id:base64,id:base64`` (32-byte keys); the first one encrypts, all decrypt."""
    keys: list[tuple[str, bytes]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key_id, sep, b64 = item.partition(":")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if not sep or not key_id or len(raw) != 32:
            raise ConfigError("VBANK_MASTER_KEY must be id:base64(32 bytes)[,id:base64...]")
        keys.append((key_id, raw))
    if not keys:
        raise ConfigError("VBANK_MASTER_KEY names no key")
    return tuple(keys)


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    data_dir: Path
    database_url: str
    secret_key: str = field(repr=False)
    master_keys: tuple[tuple[str, bytes], ...] = field(repr=False, default=())
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    cookie_secure: bool = False
    session_ttl_s: int = 8 * 3600
    signin_max_failures: int = 5
    signin_lockout_s: int = 300
    max_body_bytes: int = 64 * 1024
    agent_grace_s: float = 30.0
    ws_rate_scale: float = 1.0
    chat_writer: str = "process"  # where chat lines are stored: "process" (own core) or "thread"
    verify_steps: int = 4
    verify_fixed_steps: tuple[str, ...] = ()
    verify_time_limit_s: float = 20.0
    password_time_cost: int = 2
    password_memory_kib: int = 19 * 1024
    turn_secret: str = field(default="", repr=False)
    turn_urls: tuple[str, ...] = ()
    stun_urls: tuple[str, ...] = ()
    log_json: bool = True
    web_dir: Path = field(default_factory=lambda: DEFAULT_WEB_DIR)
    audit_keys: str = field(default="", repr=False)
    audit_origin: str = DEFAULT_AUDIT_ORIGIN
    checkpoint_events: int = 1000
    checkpoint_interval_s: float = 60.0
    witness_file: Path | None = None
    witness_url: str = ""
    retention_years: int = 5
    trading_backend: str = "ledger"  # "ledger" (built in) or "http" (a bank's core system)
    trading_url: str = ""
    trade_draft_ttl_s: float = 300.0
    verification_max_age_s: float = 900.0
    step_up_limit_minor: int = 1_000_000
    stats_max_days: int = 92  # longest period the supervisor statistics cover
    stats_timezone: str = "UTC"  # IANA zone whose calendar days the statistics count
    survey_fatigue_days: int = 30  # at most one survey per customer in this many days (0: no cap)
    survey_delay_s: float = 600.0  # a survey not answered on the page gets its link after this
    survey_link_days: int = 7
    followup_csat_max: int = 2  # CSAT at or below this opens a follow-up call task
    followup_due_h: int = 24
    webhook_worker: bool = True  # deliver webhooks from this process
    webhook_timeout_s: float = 10.0
    webhook_backoff_scale: float = 1.0  # shrinks the retry schedule (tests, benchmarks)
    webhook_max_attempts: int = 8
    webhook_poll_s: float = 2.0  # how often to look for rows other processes enqueued

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        data_dir = Path(e.get("VBANK_DATA_DIR", "var")).expanduser().resolve()
        database_url = e.get("VBANK_DATABASE_URL") or f"sqlite:///{data_dir / 'vbank.sqlite3'}"
        secret = e.get("VBANK_SECRET_KEY") or _load_or_create_secret(data_dir)
        if len(secret) < 32:
            raise ConfigError("VBANK_SECRET_KEY must be at least 32 characters")

        master = e.get("VBANK_MASTER_KEY") or _load_or_create_secret(data_dir, MASTER_KEY_FILE)
        audit_keys = e.get("VBANK_AUDIT_KEYS") or _load_or_create_secret(data_dir, AUDIT_KEY_FILE)
        _check_audit_keys(audit_keys)
        witness_file = e.get("VBANK_WITNESS_FILE", "").strip()
        checkpoint_events = _int(
            e.get("VBANK_CHECKPOINT_EVENTS", "1000"), "VBANK_CHECKPOINT_EVENTS"
        )
        checkpoint_interval = _int(
            e.get("VBANK_CHECKPOINT_INTERVAL_S", "60"), "VBANK_CHECKPOINT_INTERVAL_S"
        )
        retention_years = _int(e.get("VBANK_RETENTION_YEARS", "5"), "VBANK_RETENTION_YEARS")
        if checkpoint_events < 1 or checkpoint_interval < 1 or retention_years < 1:
            raise ConfigError(
                "VBANK_CHECKPOINT_EVENTS, VBANK_CHECKPOINT_INTERVAL_S and "
                "VBANK_RETENTION_YEARS must be at least 1"
            )

        def urls(name: str) -> tuple[str, ...]:
            return tuple(u.strip() for u in e.get(name, "").split(",") if u.strip())

        return cls(
            data_dir=data_dir,
            database_url=database_url,
            secret_key=secret,
            master_keys=parse_master_keys(master),
            host=e.get("VBANK_HOST", "127.0.0.1"),
            port=_int(e.get("VBANK_PORT", "8080"), "VBANK_PORT"),
            public_url=e.get("VBANK_PUBLIC_URL", ""),
            cookie_secure=_bool(e.get("VBANK_COOKIE_SECURE", "false"), "VBANK_COOKIE_SECURE"),
            session_ttl_s=_int(e.get("VBANK_SESSION_TTL_S", str(8 * 3600)), "VBANK_SESSION_TTL_S"),
            signin_max_failures=_int(
                e.get("VBANK_SIGNIN_MAX_FAILURES", "5"), "VBANK_SIGNIN_MAX_FAILURES"
            ),
            signin_lockout_s=_int(e.get("VBANK_SIGNIN_LOCKOUT_S", "300"), "VBANK_SIGNIN_LOCKOUT_S"),
            max_body_bytes=_int(
                e.get("VBANK_MAX_BODY_BYTES", str(64 * 1024)), "VBANK_MAX_BODY_BYTES"
            ),
            verify_steps=_int(e.get("VBANK_VERIFY_STEPS", "4"), "VBANK_VERIFY_STEPS"),
            verify_fixed_steps=tuple(
                s for s in e.get("VBANK_VERIFY_FIXED_STEPS", "").split(",") if s.strip()
            ),
            verify_time_limit_s=float(
                _int(e.get("VBANK_VERIFY_TIME_LIMIT_S", "20"), "VBANK_VERIFY_TIME_LIMIT_S")
            ),
            ws_rate_scale=float(e.get("VBANK_WS_RATE_SCALE", "1")),
            chat_writer=_chat_writer(e.get("VBANK_CHAT_WRITER", "process")),
            agent_grace_s=float(_int(e.get("VBANK_AGENT_GRACE_S", "30"), "VBANK_AGENT_GRACE_S")),
            turn_secret=e.get("VBANK_TURN_SECRET", ""),
            turn_urls=urls("VBANK_TURN_URLS"),
            stun_urls=urls("VBANK_STUN_URLS"),
            log_json=_bool(e.get("VBANK_LOG_JSON", "true"), "VBANK_LOG_JSON"),
            web_dir=Path(e.get("VBANK_WEB_DIR", str(DEFAULT_WEB_DIR))),
            audit_keys=audit_keys,
            audit_origin=e.get("VBANK_AUDIT_ORIGIN", "").strip() or DEFAULT_AUDIT_ORIGIN,
            checkpoint_events=checkpoint_events,
            checkpoint_interval_s=float(checkpoint_interval),
            witness_file=Path(witness_file).expanduser() if witness_file else None,
            witness_url=e.get("VBANK_WITNESS_URL", "").strip(),
            retention_years=retention_years,
            stats_max_days=_int(e.get("VBANK_STATS_MAX_DAYS", "92"), "VBANK_STATS_MAX_DAYS"),
            stats_timezone=_zone(e.get("VBANK_STATS_TZ", "UTC"), "VBANK_STATS_TZ"),
            survey_fatigue_days=_int(
                e.get("VBANK_SURVEY_FATIGUE_DAYS", "30"), "VBANK_SURVEY_FATIGUE_DAYS"
            ),
            survey_delay_s=float(
                _int(e.get("VBANK_SURVEY_DELAY_S", "600"), "VBANK_SURVEY_DELAY_S")
            ),
            survey_link_days=_int(e.get("VBANK_SURVEY_LINK_DAYS", "7"), "VBANK_SURVEY_LINK_DAYS"),
            followup_csat_max=_int(
                e.get("VBANK_FOLLOWUP_CSAT_MAX", "2"), "VBANK_FOLLOWUP_CSAT_MAX"
            ),
            followup_due_h=_int(e.get("VBANK_FOLLOWUP_DUE_H", "24"), "VBANK_FOLLOWUP_DUE_H"),
            webhook_worker=_bool(e.get("VBANK_WEBHOOK_WORKER", "true"), "VBANK_WEBHOOK_WORKER"),
            webhook_timeout_s=float(
                _int(e.get("VBANK_WEBHOOK_TIMEOUT_S", "10"), "VBANK_WEBHOOK_TIMEOUT_S")
            ),
            webhook_backoff_scale=float(e.get("VBANK_WEBHOOK_BACKOFF_SCALE", "1")),
            webhook_max_attempts=max(
                1, _int(e.get("VBANK_WEBHOOK_MAX_ATTEMPTS", "8"), "VBANK_WEBHOOK_MAX_ATTEMPTS")
            ),
            webhook_poll_s=float(_int(e.get("VBANK_WEBHOOK_POLL_S", "2"), "VBANK_WEBHOOK_POLL_S")),
        )


def _chat_writer(value: str) -> str:
    value = value.strip() or "process"
    if value not in ("process", "thread"):
        raise ConfigError(f"VBANK_CHAT_WRITER must be process or thread, got {value!r}")
    return value


def _trading(e: Mapping[str, str]) -> dict[str, object]:
    """The trading settings: which backend, draft lifetime, verification age, step-up."""
    backend = e.get("VBANK_TRADING_BACKEND", "ledger").strip() or "ledger"
    url = e.get("VBANK_TRADING_URL", "").strip()
    if backend not in ("ledger", "http"):
        raise ConfigError(f"VBANK_TRADING_BACKEND must be ledger or http, got {backend!r}")
    if backend == "http" and not url.startswith(("http://", "https://")):
        raise ConfigError("VBANK_TRADING_URL must be an http(s) URL when the backend is http")
    values = {
        "trade_draft_ttl_s": _int(
            e.get("VBANK_TRADE_DRAFT_TTL_S", "300"), "VBANK_TRADE_DRAFT_TTL_S"
        ),
        "verification_max_age_s": _int(
            e.get("VBANK_VERIFICATION_MAX_AGE_S", "900"), "VBANK_VERIFICATION_MAX_AGE_S"
        ),
        "step_up_limit_minor": _int(
            e.get("VBANK_STEP_UP_LIMIT_MINOR", "1000000"), "VBANK_STEP_UP_LIMIT_MINOR"
        ),
    }
    if min(values.values()) < 1:
        raise ConfigError(
            "VBANK_TRADE_DRAFT_TTL_S, VBANK_VERIFICATION_MAX_AGE_S and "
            "VBANK_STEP_UP_LIMIT_MINOR must be at least 1"
        )
    return {
        "trading_backend": backend,
        "trading_url": url,
        "trade_draft_ttl_s": float(values["trade_draft_ttl_s"]),
        "verification_max_age_s": float(values["verification_max_age_s"]),
        "step_up_limit_minor": values["step_up_limit_minor"],
    }


def _check_audit_keys(value: str) -> None:
    """Refuse a malformed VBANK_AUDIT_KEYS at start-up (the message never echoes a seed)."""
    from audit.signing import AuditKeyError, parse_audit_keys

    try:
        parse_audit_keys(value)
    except AuditKeyError as exc:
        raise ConfigError(f"VBANK_AUDIT_KEYS: {exc}") from None
