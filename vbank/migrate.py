"""Schema migrations (Alembic), driven from code so `vbank migrate` needs no alembic.ini."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would eat '%' in passwords
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (creating it on an empty database)."""
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), revision)
    logger.info("database schema at %s", revision)


def revision(database_url: str, message: str) -> None:
    """Autogenerate a new revision against a database at head (developer tool)."""
    command.revision(alembic_config(database_url), message=message, autogenerate=True)


def check_at_head(database_url: str) -> str | None:
    """None when the schema is at the newest revision, else what is wrong."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from vbank.db import sync_url

    script = ScriptDirectory.from_config(alembic_config(database_url))
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_heads()
    finally:
        engine.dispose()
    heads = set(script.get_heads())
    if set(current) != heads:
        return f"database schema is at {sorted(current) or 'nothing'}, code expects {sorted(heads)}"
    return None
