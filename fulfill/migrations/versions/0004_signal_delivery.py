"""signal delivery retries and dead letters; connector health

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

import fulfill.tables
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('signals') as batch:
        batch.add_column(sa.Column('next_attempt_at', fulfill.tables.UtcDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('dead_lettered_at', fulfill.tables.UtcDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('last_error', sa.Text(), nullable=True))
    op.create_table('connector_health',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('block', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('error_class', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('checked_at', fulfill.tables.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'provider')
    )


def downgrade() -> None:
    op.drop_table('connector_health')
    with op.batch_alter_table('signals') as batch:
        batch.drop_column('last_error')
        batch.drop_column('dead_lettered_at')
        batch.drop_column('next_attempt_at')
