"""Migrations: the Alembic head matches the SQLModel tables, and a run-time role needs to own nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlmodel import SQLModel, select
from typer.testing import CliRunner

import fulfill.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from connectors.base import StepCall, idempotency_key
from connectors.internal import InternalConnector
from fulfill import executions, ledger
from fulfill.controls import blocked_reason
from fulfill.db import (
    current_revision,
    dispose_engines,
    get_engine,
    head_revision,
    make_engine,
    transaction,
    upgrade,
    upgrade_database,
)
from fulfill.intent import parse_intent
from fulfill.storage import LocalObjectStore
from fulfill.tables import Execution, InternalTask, LedgerEntry
from surfaces.cli import app
from tasks.admit import verify_and_register
from tests.conftest import VECTORS

runner = CliRunner()


def _differences(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_sqlmodel_tables(empty_database_url: str) -> None:
    """Fails when a table changes without a migration (or a migration without the table)."""
    upgrade_database(empty_database_url)
    assert _differences(empty_database_url) == []


def test_the_migrations_go_down_and_up_again(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        upgrade(engine)
        from alembic import command

        from fulfill.db import alembic_config

        command.downgrade(alembic_config(engine), "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
    finally:
        engine.dispose()
    assert _differences(empty_database_url) == []


def test_there_is_one_head() -> None:
    from fulfill.db import _script

    assert _script().get_heads() == [head_revision()]


# --- the explicit step on the command line -------------------------------------------------
def test_fulfill_db_upgrade_and_current(empty_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_DATABASE_URL", empty_database_url)
    before = runner.invoke(app, ["db", "current", "--json"])
    assert before.exit_code == 1
    assert json.loads(before.output) == {"current": None, "head": head_revision()}

    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"database schema at revision {head_revision()}" in upgraded.output

    after = runner.invoke(app, ["db", "current"])
    assert after.exit_code == 0 and f"database: {head_revision()}" in after.output
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0, "upgrading again changes nothing"


def test_fulfill_db_upgrade_takes_the_migration_url(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULFILL_DATABASE_URL", f"sqlite:///{tmp_path / 'runtime.db'}")
    result = runner.invoke(app, ["db", "upgrade", "--url", empty_database_url])
    assert result.exit_code == 0, result.output
    assert "executions" in sa.inspect(get_engine(empty_database_url)).get_table_names()
    assert not (tmp_path / "runtime.db").exists()


# --- PostgreSQL: a run-time role that owns nothing -----------------------------------------
@pytest.fixture
def owned_database(empty_postgres_url: str) -> str:
    """An empty PostgreSQL database, owned by the administrator (the migration role here)."""
    return empty_postgres_url


@pytest.fixture
def runtime_role(postgres_admin_url: str, owned_database: str) -> Iterator[str]:
    """A LOGIN role that is no superuser and owns nothing (its grants and itself dropped after)."""
    role = f"fulfill_runtime_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT')
    yield role
    dispose_engines()
    database = make_url(owned_database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(database, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')  # its privileges in the test database
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_runtime_role_executes_without_owning_the_tables(
    owned_database: str,
    runtime_role: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_intent: Any,
    tenant: str,
) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--url", owned_database, "--runtime-role", runtime_role])
    assert result.exit_code == 0, result.output
    assert f"granted to {runtime_role}" in result.output
    runtime_url = make_url(owned_database).set(username=runtime_role, password=None)
    url = runtime_url.render_as_string(hide_password=False)
    monkeypatch.setenv("FULFILL_DATABASE_URL", url)
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FULFILL_APPROVAL_KEYS", str(VECTORS / "keys.json"))
    monkeypatch.delenv("FULFILL_EMERGENCY_STOP", raising=False)

    # The whole path of one execution, connected as the run-time role.
    intent = make_intent("internal.create_task", {"title": "Least privilege"})
    assert verify_and_register(intent).admitted
    engine = get_engine()  # the schema check reads alembic_version as this role
    with transaction(engine) as session:
        assert session.exec(sa.text("SELECT current_user")).scalar_one() == runtime_role  # type: ignore[call-overload]
        lease = executions.claim(
            session,
            intent["action_intent_id"],
            owner="runtime-test/1",
            blocked=blocked_reason(session, tenant, "internal.create_task"),
        )
    assert isinstance(lease, executions.Lease)
    call = StepCall(
        action_intent_id=lease.action_intent_id,
        tenant_id=tenant,
        account_id=intent["account_id"],
        action_type="internal.create_task",
        step="create_task",
        idempotency_key=idempotency_key(lease.action_intent_id, "create_task"),
        params=parse_intent(intent).normalized_parameters(),
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system="internal", call=call)
    step = InternalConnector(engine, LocalObjectStore(tmp_path / "objects")).execute(call)
    with transaction(engine) as session:
        executions.step_succeeded(session, lease, "create_task", step)
        executions.finish(
            session,
            lease,
            status="SUCCEEDED",
            explanation=step.summary,
            failure=None,
            refs=[step.ref.model_dump(mode="json")],
        )
    with transaction(engine) as session:
        assert session.get(Execution, intent["action_intent_id"]).status == "SUCCEEDED"  # type: ignore[union-attr]
        tasks = session.exec(
            select(InternalTask).where(InternalTask.action_intent_id == lease.action_intent_id)
        )
        assert len(list(tasks)) == 1
        assert all(report.ok for report in ledger.verify_chains(session, [tenant]))

    # … and it can neither change the schema nor rewrite the ledger.
    forbidden = [
        "ALTER TABLE executions ADD COLUMN sneaky integer",
        "DROP TABLE signals",
        "TRUNCATE steps",
        "CREATE INDEX ix_sneaky ON executions (status)",
        f"UPDATE ledger SET actor = 'mallory' WHERE tenant_id = '{tenant}'",
        f"DELETE FROM ledger WHERE tenant_id = '{tenant}'",
        "UPDATE alembic_version SET version_num = 'x'",
    ]
    for statement in forbidden:
        with (
            pytest.raises(ProgrammingError, match="InsufficientPrivilege|must be owner|permission denied"),
            engine.begin() as connection,
        ):
            connection.exec_driver_sql(statement)
    with transaction(engine) as session:
        rows = session.exec(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant)).all()
        assert rows and all(row.actor != "mallory" for row in rows)


def test_granting_to_a_missing_role_is_a_clear_error(owned_database: str) -> None:
    result = runner.invoke(
        app, ["db", "upgrade", "--url", owned_database, "--runtime-role", "no_such_role_x"]
    )
    assert result.exit_code == 1
    assert "FULFILL_RUNTIME_ROLE: the role 'no_such_role_x' does not exist" in result.output
