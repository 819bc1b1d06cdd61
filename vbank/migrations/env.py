"""Alembic environment: runs migrations with the blocking driver for the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from vbank.db import configure_sqlite, is_sqlite, sync_url
from vbank.schema import metadata

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by vbank.migrate"
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    if is_sqlite(url):
        configure_sqlite(engine)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=is_sqlite(url),
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
