"""no index on audit_events.actor_id

Every chat line is an audit event, and the actor index put each one in a random page
of its own B-tree: about one page written per line of the busiest write path (6.6 → 5.5
SQLite pages per chat line), for an index no query needs. Every query that filters by
actor also names the session, whose index finds the rows.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 03:10:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_actor_id'))


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_actor_id'), ['actor_id'], unique=False)
