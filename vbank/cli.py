"""The ``vbank`` command: serve, demo, migrate, user add, audit verify."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from vbank.config import ConfigError, Settings
from vbank.logs import setup_logging

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
    from vbank.app import create_app
    from vbank.migrate import check_at_head

    problem = check_at_head(settings.database_url)
    if problem:
        sys.exit(f"vbank: {problem}; run `vbank migrate` first")
    app = create_app(settings)
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    print(f"vbank serving on {base}  (sign in at {base}/signin)", flush=True)
    if banner:
        print(banner, flush=True)
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
        db = Database(settings.database_url)
        try:
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
        finally:
            await db.close()

    return asyncio.run(run())


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from audit.log import verify_database
    from vbank.db import Database

    settings = _settings()

    async def run() -> int:
        db = Database(settings.database_url)
        try:
            async with db.sessions() as session:
                report = await verify_database(session)
        finally:
            await db.close()
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "events": report.events,
                    "first_bad_seq": report.first_bad_seq,
                    "reason": report.reason,
                }
            )
        )
        return 0 if report.ok else 1

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
        help="verify the audit chain in the database",
        description="Check every event's hash link; print JSON; exit 1 naming the first bad event.",
    )
    p.set_defaults(func=cmd_audit_verify)

    from vbank.bench.cli import add_parser as add_bench

    add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
