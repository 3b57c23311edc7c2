"""PostgreSQL row-level security: a second wall behind the tenant filters (migration 0006).

Connected as the run-time role (neither owner nor superuser), a transaction scoped to tenant A sees and
writes only A's rows even when a query forgets its tenant filter; a connection that sets no scope sees
nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlmodel import select

from fulfill import controls, executions, ledger
from fulfill.db import dispose_engines, make_engine, transaction, upgrade_database
from fulfill.executions import ExecutionNotFound
from fulfill.intent import parse_intent
from fulfill.tables import Control, Execution, LedgerEntry
from surfaces.service import ExecutionService
from tests.conftest import VECTORS


@pytest.fixture
def runtime(
    postgres_admin_url: str, empty_postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Engine, str]]:
    """The schema migrated by the owner; an engine connected as a LOGIN role that owns nothing."""
    role = f"fulfill_rls_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FULFILL_APPROVAL_KEYS", str(VECTORS / "keys.json"))
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT')
    upgrade_database(empty_postgres_url, runtime_role=role)
    url = make_url(empty_postgres_url).set(username=role, password=None).render_as_string(hide_password=False)
    engine = make_engine(url)
    yield engine, url
    engine.dispose()
    dispose_engines()
    database = make_url(empty_postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(database, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_tenant_scoped_transaction_sees_and_writes_only_its_tenant(
    runtime: tuple[Engine, str], make_intent: Any, tenant: str, unique: str
) -> None:
    engine, url = runtime
    theirs_tenant = f"b-{unique}"
    mine = make_intent("internal.create_task", {"title": "A's"})
    theirs = make_intent("internal.create_task", {"title": "B's"}, tenant_id=theirs_tenant)
    with transaction(engine) as session:  # the engine's own scope: every tenant
        for raw in (mine, theirs):
            executions.register(session, raw, parse_intent(raw))
        controls.set_switch(
            session, "tenant", theirs_tenant, enabled=False, reason="B's incident", actor="ops"
        )
        controls.set_switch(
            session, "action_type", "crm.update_field", enabled=False, reason="all", actor="ops"
        )

    with transaction(engine, tenant=tenant) as session:
        # No tenant filter in these queries: the policies apply it.
        assert [e.tenant_id for e in session.exec(select(Execution))] == [tenant]
        assert {row.tenant_id for row in session.exec(select(LedgerEntry))} == {tenant}
        assert sorted((c.scope, c.key) for c in session.exec(select(Control))) == [
            ("action_type", "crm.update_field")
        ], "the action-type switch applies to everyone; B's tenant switch is invisible"
        hidden = session.connection().execute(
            sa.text("UPDATE executions SET explanation = 'x' WHERE action_intent_id = :i"),
            {"i": theirs["action_intent_id"]},
        )
        assert hidden.rowcount == 0, "another tenant's row cannot be written either"

    with (
        pytest.raises(sa.exc.ProgrammingError, match="row-level security"),
        transaction(engine, tenant=tenant) as session,
    ):
        ledger.append(session, tenant_id=theirs_tenant, event_type="TENANT_CONFIGURED", details={})

    with transaction(engine) as session:
        assert {e.tenant_id for e in session.exec(select(Execution))} == {tenant, theirs_tenant}

    raw_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(raw_url, connect_timeout=5) as conn:  # not fulfill's engine: no scope set
        assert conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (0,)


def test_the_service_reads_of_a_tenant_run_inside_its_scope(
    runtime: tuple[Engine, str], make_intent: Any, tenant: str, unique: str
) -> None:
    engine, _ = runtime
    mine = make_intent("internal.create_task", {"title": "A's"})
    theirs = make_intent("internal.create_task", {"title": "B's"}, tenant_id=f"b-{unique}")
    with transaction(engine) as session:
        for raw in (mine, theirs):
            executions.register(session, raw, parse_intent(raw))
    service = ExecutionService(engine)

    assert service.get_execution_status(mine["action_intent_id"], tenant).status == "PENDING"
    assert service.get_timeline(mine["action_intent_id"], tenant).events
    page = service.list_executions(tenant_id=tenant)
    assert [i.action_intent_id for i in page.items] == [mine["action_intent_id"]]
    with pytest.raises(ExecutionNotFound):
        service.get_execution_status(theirs["action_intent_id"], tenant)
    assert service.cancel_execution(mine["action_intent_id"], tenant, actor="ops").status == "CANCELLED"
    assert service.ledger_for_intent(mine["action_intent_id"], tenant).verification.ok


def test_every_tenant_table_has_a_policy(runtime: tuple[Engine, str]) -> None:
    from sqlmodel import SQLModel

    engine, _ = runtime
    with engine.connect() as conn:
        protected = {
            name
            for (name,) in conn.execute(
                sa.text("SELECT relname FROM pg_class WHERE relrowsecurity AND relkind = 'r'")
            )
        }
    tenant_tables = {
        name
        for name, table in SQLModel.metadata.tables.items()
        if {"tenant_id", "claimed_tenant_id"} & set(table.columns.keys()) or name == "controls"
    }
    assert tenant_tables <= protected, tenant_tables - protected
