"""Alembic environment: runs migrations with the blocking driver for the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import audit.models  # noqa: F401  registers the audit tables
import vbank.contact.models
import vbank.identity.models
import vbank.models
import vbank.surveys.models
import vbank.trading.drafts
import vbank.trading.models
import vbank.webhooks.models  # noqa: F401  registers the webhook tables
from vbank.db import Base, configure_sqlite, is_sqlite, sync_url

config = context.config
target_metadata = Base.metadata


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
