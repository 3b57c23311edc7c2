"""the chain head advances with each ledger row, in the database

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

``fulfill.ledger.append`` locked a tenant's chain head, inserted the next row, then moved the head
with an ``UPDATE`` of its own: one statement (on PostgreSQL, one round trip) per fact. A trigger now
moves it as part of the row's ``INSERT``, so a row cannot be written without its head following it.
The head only moves forward: a row inserted below the head (nothing does) leaves it where it is.
Additive for a rolling deploy: the release before still sends its own ``UPDATE`` after the insert, with
the values the trigger has just written.
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_ADVANCE = (
    "UPDATE ledger_heads SET seq = NEW.seq, row_hash = NEW.row_hash "
    "WHERE tenant_id = NEW.tenant_id AND seq < NEW.seq"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION fulfill_ledger_advance_head() RETURNS trigger AS $$
            BEGIN
                {_ADVANCE};
                RETURN NULL;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER ledger_advances_head AFTER INSERT ON ledger "
            "FOR EACH ROW EXECUTE FUNCTION fulfill_ledger_advance_head()"
        )
    else:
        op.execute(f"CREATE TRIGGER ledger_advances_head AFTER INSERT ON ledger BEGIN {_ADVANCE}; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_advances_head ON ledger")
        op.execute("DROP FUNCTION IF EXISTS fulfill_ledger_advance_head()")
    else:
        op.execute("DROP TRIGGER IF EXISTS ledger_advances_head")
