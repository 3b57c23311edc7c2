"""keyed ledger chain (HMAC-SHA256), no statement form rewrites the ledger, security log

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

* Existing ledger rows are re-keyed: each tenant's chain is checked under the old plain
  ``sha256(prev_hash || JCS(row))`` and, up to its first broken row, rewritten as
  ``HMAC-SHA256(K_chain, prev_hash || JCS(row))`` with the ledger key of the process running the
  upgrade (``FULFILL_LEDGER_KEY``, else the key file — the workers must use the same one). A row
  that did not verify before, and every row after it, is left as it was, so ``fulfill ledger
  verify`` still names it. An empty ledger needs no key. The downgrade does the reverse.
* SQLite: a BEFORE INSERT trigger refuses a row whose id or (tenant_id, seq) exists already, so
  ``INSERT OR REPLACE``, ``REPLACE INTO`` and ``INSERT … ON CONFLICT DO UPDATE`` cannot swap a
  row past the UPDATE/DELETE triggers. (PostgreSQL has no REPLACE; ``ON CONFLICT DO UPDATE``
  fires the UPDATE trigger and needs the UPDATE privilege the run-time role lacks.)
* ``security_log``: rejected submissions whose approval signature did not verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import rfc8785
import sqlalchemy as sa
import sqlmodel

import fulfill.tables
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

GENESIS = "0" * 64
APPEND_ONLY_MESSAGE = "ledger is append-only"
HASHED_FIELDS = ("tenant_id", "seq", "action_intent_id", "event_type", "at", "actor", "details")

Chain = Callable[[str, bytes], str]


def upgrade() -> None:
    op.create_table('security_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', fulfill.tables.UtcDateTime(timezone=True), nullable=False),
    sa.Column('code', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('claimed_tenant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('claimed_intent_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('field', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('document_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('minute', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('bucket', sqlmodel.sql.sqltypes.AutoString(length=96), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('bucket')
    )
    with op.batch_alter_table('security_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_security_log_claimed_intent_id'), ['claimed_intent_id'], unique=False)
        batch_op.create_index('ix_security_log_minute_tenant', ['minute', 'claimed_tenant_id'], unique=False)

    chain = _keyed()
    if chain is not None:
        with _rewritable():
            _rechain(_plain, chain)
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER ledger_no_replace BEFORE INSERT ON ledger "
            "WHEN EXISTS (SELECT 1 FROM ledger WHERE id = NEW.id "
            "OR (tenant_id = NEW.tenant_id AND seq = NEW.seq)) "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS ledger_no_replace")
    chain = _keyed()
    if chain is not None:
        with _rewritable():
            _rechain(chain, _plain)
    with op.batch_alter_table('security_log', schema=None) as batch_op:
        batch_op.drop_index('ix_security_log_minute_tenant')
        batch_op.drop_index(batch_op.f('ix_security_log_claimed_intent_id'))
    op.drop_table('security_log')


# --- re-keying ----------------------------------------------------------------------------------
LEDGER = sa.table(
    "ledger",
    sa.column("id", sa.Integer),
    sa.column("tenant_id", sa.String),
    sa.column("seq", sa.Integer),
    sa.column("action_intent_id", sa.String),
    sa.column("event_type", sa.String),
    sa.column("at", sa.String),
    sa.column("actor", sa.String),
    sa.column("details", sa.JSON),
    sa.column("prev_hash", sa.String),
    sa.column("row_hash", sa.String),
)
HEADS = sa.table("ledger_heads", sa.column("tenant_id", sa.String), sa.column("seq", sa.Integer), sa.column("row_hash", sa.String))


def _plain(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def _keyed() -> Chain | None:
    """The keyed chain function, or None for an empty ledger (no key needed, none created)."""
    if not op.get_bind().execute(sa.select(LEDGER.c.id).limit(1)).first():
        return None
    from fulfill.ledger import ledger_key  # the key of the process running the upgrade

    secret = ledger_key().chain

    def chain(prev_hash: str, canonical: bytes) -> str:
        return hmac.new(secret, prev_hash.encode("ascii") + canonical, hashlib.sha256).hexdigest()

    return chain


class _rewritable:
    """The append-only guard lifted for the duration of the migration (as the schema owner)."""

    def __enter__(self) -> None:
        if op.get_bind().dialect.name == "postgresql":
            op.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        else:
            op.execute("DROP TRIGGER IF EXISTS ledger_no_update")

    def __exit__(self, *exc: object) -> None:
        if op.get_bind().dialect.name == "postgresql":
            op.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")
        else:
            op.execute(
                "CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )


def _rechain(old: Chain, new: Chain) -> None:
    """Rewrite each chain from ``old`` to ``new`` up to its first row that does not verify under ``old``."""
    bind = op.get_bind()
    tenants = [t for (t,) in bind.execute(sa.select(LEDGER.c.tenant_id).distinct())]
    for tenant_id in tenants:
        rows = bind.execute(
            sa.select(LEDGER).where(LEDGER.c.tenant_id == tenant_id).order_by(LEDGER.c.seq)
        ).all()
        prev_old = prev_new = GENESIS
        intact = True
        for expected, row in enumerate(rows, start=1):
            canonical = rfc8785.dumps({name: getattr(row, name) for name in HASHED_FIELDS})
            if row.seq != expected or row.prev_hash != prev_old or old(prev_old, canonical) != row.row_hash:
                intact = False
                break
            rewritten = new(prev_new, canonical)
            bind.execute(
                sa.update(LEDGER).where(LEDGER.c.id == row.id).values(prev_hash=prev_new, row_hash=rewritten)
            )
            prev_old, prev_new = row.row_hash, rewritten
        if intact and rows:
            bind.execute(
                sa.update(HEADS)
                .where(HEADS.c.tenant_id == tenant_id, HEADS.c.seq == len(rows), HEADS.c.row_hash == prev_old)
                .values(row_hash=prev_new)
            )
