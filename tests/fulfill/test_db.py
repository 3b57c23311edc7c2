"""Engines never migrate: the schema is an explicit step, and an engine refuses a schema it does not match."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa

import fulfill.db as db
from fulfill.db import (
    SchemaNotCurrent,
    dispose_engines,
    get_engine,
    head_revision,
    make_engine,
    transaction,
    upgrade,
    upgrade_database,
)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_an_engine_does_not_create_the_schema(empty_database_url: str) -> None:
    with pytest.raises(
        SchemaNotCurrent, match=r"not at the current revision: it has no fulfill schema"
    ) as raised:
        get_engine(empty_database_url)
    assert "run `fulfill db upgrade`" in str(raised.value)
    assert _tables(empty_database_url) == set(), "nothing was created on first use"


def test_an_engine_refuses_a_schema_that_is_behind(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    upgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(SchemaNotCurrent, match=f"it is at 0001, this fulfill needs {head_revision()}; run"):
        get_engine(empty_database_url)
    assert upgrade_database(empty_database_url) == head_revision()
    engine = get_engine(empty_database_url)  # the same process works once the database is upgraded
    with transaction(engine) as session:
        assert session.exec(sa.text("SELECT count(*) FROM executions")).scalar_one() == 0  # type: ignore[call-overload]


def test_the_schema_is_checked_once_per_engine(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade_database(empty_database_url)
    checks: list[Any] = []
    real = db.check_schema
    monkeypatch.setattr(db, "check_schema", lambda engine: checks.append(engine) or real(engine))
    engines = {id(get_engine(empty_database_url)) for _ in range(5)}
    assert len(engines) == 1 and len(checks) == 1
    dispose_engines()
    get_engine(empty_database_url)
    assert len(checks) == 2, "a new engine checks again"


def test_a_newer_schema_is_accepted_with_a_warning(
    empty_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Migrations are applied before a rolling deploy: the old code keeps running on the newer schema."""
    upgrade_database(empty_database_url)
    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    with caplog.at_level(logging.WARNING, logger="fulfill.db"):
        get_engine(empty_database_url)
    assert "9999_from_the_future" in caplog.text


def test_upgrade_database_uses_the_migration_url(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULFILL_DATABASE_URL", "sqlite:////nonexistent/runtime/only.db")
    monkeypatch.setenv("FULFILL_MIGRATION_DATABASE_URL", empty_database_url)
    assert upgrade_database() == head_revision()
    assert {"executions", "ledger", "alembic_version"} <= _tables(empty_database_url)


def test_runtime_roles_exist_only_on_postgresql(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="^FULFILL_RUNTIME_ROLE: roles exist only on PostgreSQL"):
        upgrade_database(f"sqlite:///{tmp_path / 'x.db'}", runtime_role="fulfill_runtime")
    assert _tables(f"sqlite:///{tmp_path / 'x.db'}") == set(), "refused before migrating"


def test_migrate_true_is_an_explicit_development_shortcut(empty_database_url: str) -> None:
    engine = get_engine(empty_database_url, migrate=True)
    assert "executions" in sa.inspect(engine).get_table_names()
