"""compensation pending on executions, late-commit window on steps

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa

import fulfill.tables
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('executions') as batch:
        batch.add_column(sa.Column('compensation_pending', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('steps') as batch:
        batch.add_column(sa.Column('unsettled_until', fulfill.tables.UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('steps') as batch:
        batch.drop_column('unsettled_until')
    with op.batch_alter_table('executions') as batch:
        batch.drop_column('compensation_pending')
