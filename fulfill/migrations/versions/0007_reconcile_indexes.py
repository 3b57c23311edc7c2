"""indexes for the reconciler's watch

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

The reconciler now looks every second or two (a dead executor is taken over seconds after its 15 s
lease runs out). Its queries select open executions only — EXECUTING by ``lease_until``, PENDING by
age, an owed undo by ``lease_until`` — and must read index ranges, not the whole table: without these,
SQLite scans the table and PostgreSQL the whole listing index at every pass.
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_executions_status_lease', 'executions', ['status', 'lease_until'])
    op.create_index('ix_executions_undo_owed', 'executions', ['compensation_pending', 'lease_until'])


def downgrade() -> None:
    op.drop_index('ix_executions_undo_owed', table_name='executions')
    op.drop_index('ix_executions_status_lease', table_name='executions')
