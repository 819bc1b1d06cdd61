"""The ``vbank`` command: serve, demo, migrate, user add, audit (verify, export, bundles,
checkpoints, key rotation, retention)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from vbank.config import ConfigError, Settings
from vbank.logs import setup_logging

if TYPE_CHECKING:
    from audit.keys import KeyRegistry

logger = logging.getLogger(__name__)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"vbank: configuration error: {exc}")


def cmd_migrate(args: argparse.Namespace) -> int:
    from vbank.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, args.revision)
    print(f"database migrated to {args.revision}")
    return 0


def _serve(settings: Settings, banner: str = "") -> None:
    from vbank.app import create_app, settle_heap
    from vbank.migrate import check_at_head

    problem = check_at_head(settings.database_url)
    if problem:
        sys.exit(f"vbank: {problem}; run `vbank migrate` first")
    app = create_app(settings)
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    print(f"vbank serving on {base}  (sign in at {base}/signin)", flush=True)
    if banner:
        print(banner, flush=True)
    settle_heap()
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=10,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings()
    setup_logging(settings.log_json)
    _serve(settings)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vbank.demo import DEMO_PASSWORD, seed_demo
    from vbank.migrate import upgrade

    settings = _settings()
    setup_logging(settings.log_json)
    upgrade(settings.database_url)
    users = asyncio.run(seed_demo(settings))
    lines = ["demo sign-ins (password for all: " + DEMO_PASSWORD + "):"]
    for username, role, note in users:
        lines.append(f"  {role:<10} {username:<10} {note}")
    _serve(settings, "\n".join(lines))
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from vbank.auth.passwords import Passwords
    from vbank.auth.users import UserError, create_user
    from vbank.db import Database
    from vbank.roles import Role

    settings = _settings()
    password = os.environ.get("VBANK_NEW_PASSWORD") or getpass.getpass("password: ")

    async def run() -> int:
        try:
            async with Database(settings.database_url) as db:
                async with db.transaction() as session:
                    user = await create_user(
                        session,
                        Passwords(settings.password_time_cost, settings.password_memory_kib),
                        username=args.username,
                        password=password,
                        role=Role(args.role),
                        display_name=args.display_name,
                        skills=args.skills.split(",") if args.skills else (),
                        capacity=args.capacity,
                    )
                    print(f"created {user.role} {user.username} (id {user.id})")
                    return 0
        except UserError as exc:
            print(f"vbank: {exc}", file=sys.stderr)
            return 2

    return asyncio.run(run())


def _public_keys(path: str) -> KeyRegistry:
    """Public verifier keys from a keys.json file (``vbank audit public-keys``)."""
    from audit.keys import KeyRegistry, KeyRegistryError

    try:
        with open(path, encoding="utf-8") as fh:
            return KeyRegistry.from_public_manifest(json.load(fh))
    except (OSError, ValueError, KeyRegistryError, TypeError, AttributeError) as exc:
        sys.exit(f"vbank: cannot read keys from {path}: {exc}")


def _print(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from audit.checkpoints import read_witness_file
    from audit.signing import registry_from_settings
    from audit.verifier import VerifyReport, verify_from_database, verify_from_export
    from vbank.db import Database

    # an auditor verifying an export with the bank's public keys needs no configuration
    settings = None if (args.from_export and args.keys) else _settings()
    if args.keys:
        keys = _public_keys(args.keys)
    else:
        assert settings is not None
        keys = registry_from_settings(settings).public_only()
    witness_path = args.witness
    if witness_path is None and settings is not None and settings.witness_file is not None:
        witness_path = settings.witness_file if settings.witness_file.exists() else None
    try:
        witness = read_witness_file(witness_path) if witness_path else []
    except (OSError, ValueError) as exc:
        sys.exit(f"vbank: cannot read the witness file: {exc}")

    async def from_db() -> VerifyReport:
        assert settings is not None
        async with Database(settings.database_url) as db:
            async with db.sessions() as session:
                return await verify_from_database(session, keys, witness=witness)

    if args.from_export:
        try:
            report = verify_from_export(args.from_export, keys, witness=witness)
        except OSError as exc:
            sys.exit(f"vbank: cannot read {args.from_export}: {exc}")
    else:
        report = asyncio.run(from_db())
    out = report.to_json()
    brief = {k: out[k] for k in ("ok", "events", "first_bad_seq", "reason")}
    _print(out if args.details else brief)
    return 0 if report.ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from audit.bundle import BundleError, export_bundle
    from audit.log import SYSTEM
    from audit.verifier import export_log
    from vbank.db import Database

    settings = _settings()

    async def run() -> int:
        async with Database(settings.database_url) as db:
            if args.contact:
                try:
                    info = await export_bundle(
                        db, args.contact, args.output, settings, actor=SYSTEM
                    )
                except BundleError as exc:
                    print(f"vbank: {exc}", file=sys.stderr)
                    return 1
                _print(
                    {
                        "bundle": args.output,
                        "contact": info.contact_id,
                        "events": info.events,
                        "checkpoint_size": info.checkpoint_size,
                        "files": len(info.files),
                        "missing": list(info.missing),
                        "sha256": info.sha256,
                    }
                )
                return 0
            async with db.sessions() as session:
                count = await export_log(session, args.output, origin=settings.audit_origin)
            _print({"export": args.output, "events": count})
            return 0

    return asyncio.run(run())


def cmd_audit_verify_bundle(args: argparse.Namespace) -> int:
    from audit.bundle import verify_bundle

    keys = _public_keys(args.keys) if args.keys else None
    if keys is None:
        print(
            "vbank: no --keys given: checking against the bundle's own keys.json, which proves "
            "the bundle is intact but not that the bank made it",
            file=sys.stderr,
        )
    report = verify_bundle(args.file, keys)
    _print(report.to_json())
    return 0 if report.ok else 1


def cmd_audit_public_keys(args: argparse.Namespace) -> int:
    from audit.signing import registry_from_settings

    manifest = registry_from_settings(_settings()).public_manifest()
    text = json.dumps(manifest, indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from audit.checkpoint import CheckpointError
    from audit.checkpoints import Checkpointer, CheckpointRefused
    from vbank.db import Database

    settings = _settings()

    async def run() -> int:
        try:
            async with Database(settings.database_url) as db:
                row = await Checkpointer.from_settings(db, settings).checkpoint_now()
        except (CheckpointRefused, CheckpointError) as exc:
            print(f"vbank: no checkpoint signed: {exc}", file=sys.stderr)
            return 1
        _print({"signed": row is not None, "size": row.size if row else None})
        return 0

    return asyncio.run(run())


def cmd_audit_rotate_master_key(args: argparse.Namespace) -> int:
    from audit.log import append
    from audit.sealed import rewrap_all
    from vbank.db import Database
    from vbank.evidence import keyring_from_settings

    settings = _settings()
    keyring = keyring_from_settings(settings)
    result = rewrap_all(settings.data_dir, keyring)

    async def record() -> dict[str, Any]:
        from vbank.webhooks.endpoints import rewrap_secrets

        async with Database(settings.database_url) as db:
            secrets_rewrapped, secrets_current, secrets_failed = await rewrap_secrets(db, keyring)
            report = {
                "master_key_id": keyring.current_id,
                "rewrapped": result.rewrapped,
                "already_current": result.current,
                "failed": list(result.failed),
                "webhook_secrets_rewrapped": secrets_rewrapped,
                "webhook_secrets_current": secrets_current,
                "webhook_secrets_failed": secrets_failed,
            }
            async with db.transaction() as session:
                await append(session, "keys.master_rewrapped", report)
            return report

    report = asyncio.run(record())
    _print(report)
    return 1 if report["failed"] or report["webhook_secrets_failed"] else 0


def cmd_audit_purge_expired(args: argparse.Namespace) -> int:
    from vbank.db import Database
    from vbank.retention import purge_expired

    settings = _settings()

    async def run() -> int:
        async with Database(settings.database_url) as db:
            purged = await purge_expired(db, settings, dry_run=args.dry_run)
        _print(
            {
                "dry_run": args.dry_run,
                "retention_years": settings.retention_years,
                "contacts": [
                    {"contact": p.contact_id, "files": len(p.files), "failed": list(p.failed)}
                    for p in purged
                ],
            }
        )
        return 1 if any(p.failed for p in purged) else 0

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vbank",
        description="Video remote banking: chat, video identification, "
        "brokered transactions, audit.",
        epilog="Configuration comes from VBANK_* environment variables; see README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "serve", help="run the service", description="Run the HTTP/websocket service."
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "demo",
        help="migrate, seed demo data and serve",
        description="Migrate the database, add demo customers, agents, an auditor and a supervisor "
        "(once), print their sign-ins and serve.",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "migrate", help="create or upgrade the schema", description="Run Alembic migrations."
    )
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.set_defaults(func=cmd_migrate)

    user = sub.add_parser("user", help="manage users", description="Manage users.")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    p = user_sub.add_parser(
        "add",
        help="add a user",
        description="Add a user. The password is read from VBANK_NEW_PASSWORD or asked for.",
    )
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=["customer", "agent", "auditor", "supervisor"])
    p.add_argument("--display-name", default=None)
    p.add_argument(
        "--skills", default="", help="agents: comma-separated skills, e.g. accounts,cards"
    )
    p.add_argument("--capacity", type=int, default=2, help="agents: concurrent contacts (1-10)")
    p.set_defaults(func=cmd_user_add)

    audit = sub.add_parser("audit", help="audit trail tools", description="Audit trail tools.")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser(
        "verify",
        help="verify the audit log (database or export)",
        description="Check the hash chain, every signed checkpoint (signature, Merkle root, "
        "consistency with the previous one) and, given a witness file, the checkpoints it "
        "holds. Print JSON; exit 1 naming the first bad event.",
    )
    p.add_argument("--from-export", metavar="FILE", help="verify an export file, not the database")
    p.add_argument(
        "--witness",
        metavar="FILE",
        help="witness file of published checkpoints (default: VBANK_WITNESS_FILE if it exists)",
    )
    p.add_argument(
        "--keys", metavar="FILE", help="public keys (keys.json) instead of the configured keys"
    )
    p.add_argument("--details", action="store_true", help="also print checkpoint details")
    p.set_defaults(func=cmd_audit_verify)

    p = audit_sub.add_parser(
        "export",
        help="export the log, or one contact's evidence bundle",
        description="Without --contact: the whole log as JSON lines, for `vbank audit verify "
        "--from-export`. With --contact: a zip of the contact's events with inclusion proofs, "
        "the signed checkpoint, public keys, decrypted recordings and snapshots, and a signed "
        "manifest, for `vbank audit verify-bundle`.",
    )
    p.add_argument("--contact", metavar="ID", help="export this contact's evidence bundle")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.set_defaults(func=cmd_audit_export)

    p = audit_sub.add_parser(
        "verify-bundle",
        help="verify an evidence bundle offline",
        description="Check a bundle's signatures, inclusion proofs and file hashes with public "
        "keys only. Print JSON; exit 1 naming the first bad event or file.",
    )
    p.add_argument("file")
    p.add_argument("--keys", metavar="FILE", help="the bank's public keys (keys.json)")
    p.set_defaults(func=cmd_audit_verify_bundle)

    p = audit_sub.add_parser(
        "public-keys",
        help="print the public audit keys (keys.json)",
        description="Print the public verifier keys with their validity windows, for auditors.",
    )
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_audit_public_keys)

    p = audit_sub.add_parser(
        "checkpoint",
        help="sign a checkpoint now",
        description="Sign a checkpoint of every event not yet covered (the service does this "
        "by itself while it runs) and publish it to the witness.",
    )
    p.set_defaults(func=cmd_audit_checkpoint)

    p = audit_sub.add_parser(
        "rotate-master-key",
        help="re-wrap every file's data key with the current master key",
        description="After putting a new key first in VBANK_MASTER_KEY (keep the old ones "
        "after it): re-wrap the data key of every recording and evidence file with it. Files "
        "are not re-encrypted. Exit 1 if a file could not be re-wrapped.",
    )
    p.set_defaults(func=cmd_audit_rotate_master_key)

    p = audit_sub.add_parser(
        "purge-expired",
        help="delete recordings and snapshots past retention",
        description="Delete the recordings and snapshots of contacts closed more than "
        "VBANK_RETENTION_YEARS ago; each deletion is an audit event.",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(func=cmd_audit_purge_expired)

    from vbank.bench.cli import add_parser as add_bench

    add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
