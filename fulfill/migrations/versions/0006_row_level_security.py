"""row-level security on every tenant table (PostgreSQL); status-listing indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

A second wall behind the tenant filters of the queries. Every table holding tenant data gets a policy
that shows (and lets write) only the rows of the tenant named by the ``fulfill.tenant`` setting of the
transaction (``fulfill.db.transaction(tenant=…)``); ``*`` is the engine's own scope (executors,
maintenance, admin tokens), set per connection by ``fulfill.db``; a connection that sets nothing sees
nothing. PostgreSQL applies the policies to the run-time role (``FULFILL_RUNTIME_ROLE``: neither owner
nor superuser); the owner and superusers bypass them, which is why the application must not connect as
either. SQLite has no row-level security: nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

SCOPE = "current_setting('fulfill.tenant', true)"
ENGINE = f"{SCOPE} = '*'"

#: table → the condition a row must meet to be visible / writable in the transaction's scope
POLICIES: dict[str, tuple[str, str]] = {
    **{
        table: (f"{ENGINE} OR tenant_id = {SCOPE}",) * 2
        for table in (
            "tenants",
            "executions",
            "steps",
            "outcomes",
            "ledger",
            "ledger_heads",
            "signals",
            "internal_tasks",
            "internal_notes",
            "internal_attachments",
            "connector_health",
            "api_tokens",  # an admin token (no tenant) is visible to the engine's scope only
        )
    },
    # Action-type switches apply to every tenant (readable by all); a tenant may write only its own switch.
    "controls": (
        f"{ENGINE} OR scope <> 'tenant' OR key = {SCOPE}",
        f"{ENGINE} OR (scope = 'tenant' AND key = {SCOPE})",
    ),
    # Refused submissions name no verified tenant: the engine's scope (operators, admin) only.
    "security_log": (ENGINE, ENGINE),
}


def upgrade() -> None:
    # The status API's listing reads one ordered index range per page (bench/bench_status.py):
    # (created_at, action_intent_id) is the keyset order, status its optional filter.
    op.drop_index('ix_executions_account_created', table_name='executions')
    op.create_index(
        'ix_executions_account_created_id',
        'executions',
        ['tenant_id', 'account_id', 'created_at', 'action_intent_id'],
    )
    op.create_index(
        'ix_executions_account_status_created_id',
        'executions',
        ['tenant_id', 'account_id', 'status', 'created_at', 'action_intent_id'],
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    # Tenant and account are correlated; without this the planner misjudges the RLS-filtered ranges.
    op.execute("CREATE STATISTICS IF NOT EXISTS st_executions_tenant_account (dependencies, ndistinct) "
               "ON tenant_id, account_id FROM executions")
    for table, (visible, writable) in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({visible}) WITH CHECK ({writable})")


def downgrade() -> None:
    op.drop_index('ix_executions_account_status_created_id', table_name='executions')
    op.drop_index('ix_executions_account_created_id', table_name='executions')
    op.create_index('ix_executions_account_created', 'executions', ['tenant_id', 'account_id', 'created_at'])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP STATISTICS IF EXISTS st_executions_tenant_account")
    for table in POLICIES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
