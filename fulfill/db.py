"""Database access: engines, transactions, the database clock, and the schema's revision.

SQLite (the embedded default) runs every write transaction as ``BEGIN IMMEDIATE`` so claims
and ledger appends serialise exactly as ``SELECT … FOR UPDATE`` makes them on PostgreSQL.
All times that matter (leases, TTL, ledger) come from the database's clock, never the worker's.

The schema is migrated by an explicit step — :func:`upgrade_database` (``fulfill db upgrade``),
on PostgreSQL as a role that owns the tables — never by a worker on first use. :func:`get_engine`
checks once per engine that the database is at this code's Alembic head and otherwise refuses
with :class:`SchemaNotCurrent`. :func:`grant_runtime_role` gives a PostgreSQL run-time role the
data privileges the engine needs (the ledger: read and append only) and nothing more.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel

from fulfill.settings import load_settings

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_verified: set[str] = set()
_lock = threading.Lock()
MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
APPEND_ONLY_TABLES = frozenset({"ledger"})  # the run-time role may read and append, never rewrite


class SchemaNotCurrent(SQLAlchemyError):
    """The database's schema is missing or older than this code: run ``fulfill db upgrade``."""


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with fulfill's per-dialect settings (no schema check)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    _configure_postgresql(engine)
    return engine


#: The PostgreSQL setting row-level security reads (migration 0006): ``*`` is the engine's own scope
#: (every tenant: executors, maintenance, admin); a tenant id limits every row a transaction can see or
#: write to that tenant's; unset (a connection that is not fulfill's), nothing is visible.
TENANT_SETTING = "fulfill.tenant"
ALL_TENANTS = "*"


def _configure_postgresql(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _engine_scope(dbapi_connection: Any, _record: Any) -> None:
        # A session-level default; a tenant-scoped transaction overrides it with SET LOCAL semantics.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, false)", (TENANT_SETTING, ALL_TENANTS))
        dbapi_connection.commit()


def get_engine(url: str | None = None, *, migrate: bool = False) -> Engine:
    """The cached engine for ``url`` (default: ``FULFILL_DATABASE_URL``).

    The first call for a URL checks that the schema is at this code's head (one read of
    ``alembic_version``); until it is, every call raises :class:`SchemaNotCurrent`.

    Args:
        migrate: Upgrade the schema to head first — for throw-away development databases only;
            deployments run ``fulfill db upgrade`` as the migration role.
    """
    url = url or load_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        if url not in _verified:
            if migrate:
                upgrade(engine)
            check_schema(engine)
            _verified.add(url)
    return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _verified.clear()


def alembic_config(engine: Engine) -> Config:
    """An Alembic config bound to ``engine`` (used by ``fulfill db upgrade`` and tests)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


@functools.cache
def _script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def head_revision() -> str:
    """The newest migration this code ships (there is one head)."""
    head = _script().get_current_head()
    assert head is not None, "fulfill/migrations has no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    """The database's schema revision (``None``: no fulfill schema)."""
    return MigrationContext.configure(connection).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Refuse a database whose schema is missing or behind this code's head.

    A revision this code does not know is taken to be newer (migrated ahead of a rolling
    deploy: migrations are additive) and only logged.

    Raises:
        SchemaNotCurrent: with the revision found, the one needed and what to run.
    """
    with engine.connect() as connection:
        current = current_revision(connection)
    head = head_revision()
    if current == head:
        return
    hint = "run `fulfill db upgrade`"
    if current is None:
        raise SchemaNotCurrent(
            f"the database schema is not at the current revision: it has no fulfill schema "
            f"(needs {head}); {hint}"
        )
    try:
        known = {rev.revision for rev in _script().iterate_revisions(head, "base")}
    except CommandError:
        known = set()
    if current in known:
        raise SchemaNotCurrent(
            f"the database schema is not at the current revision: it is at {current}, "
            f"this fulfill needs {head}; {hint}"
        )
    log.warning("the database schema is at %s, newer than this fulfill's %s", current, head)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` through ``engine`` (which must be allowed to change the schema)."""
    command.upgrade(alembic_config(engine), revision)


def grant_runtime_role(engine: Engine, role: str) -> list[str]:
    """Give PostgreSQL role ``role`` exactly what the engine needs at run time; returns the statements.

    Data privileges on fulfill's tables (``SELECT, INSERT, UPDATE, DELETE``; the ledger only
    ``SELECT, INSERT`` — it is append-only), ``USAGE`` on their sequences and ``SELECT`` on the
    revision table (the schema check). No ownership, no DDL, no ``TRUNCATE``: the role cannot
    alter, drop or rewrite anything. Idempotent; run after every upgrade (``fulfill db upgrade``
    does) so that tables added by later migrations are covered.

    Raises:
        ValueError: not PostgreSQL, or the role does not exist.
    """
    if engine.dialect.name != "postgresql":
        raise ValueError(f"FULFILL_RUNTIME_ROLE: roles exist only on PostgreSQL, not {engine.dialect.name}")
    quote = engine.dialect.identifier_preparer.quote
    who = quote(role)
    statements: list[str] = []
    with engine.begin() as connection:
        exists = connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        if exists is None:
            raise ValueError(f"FULFILL_RUNTIME_ROLE: the role {role!r} does not exist (CREATE ROLE it first)")
        schema = connection.execute(sa.text("SELECT current_schema()")).scalar_one()
        statements.append(f"GRANT USAGE ON SCHEMA {quote(schema)} TO {who}")
        for name in sorted(SQLModel.metadata.tables):
            table = quote(name)
            statements.append(f"REVOKE ALL ON TABLE {table} FROM {who}")
            if name in APPEND_ONLY_TABLES:
                statements.append(f"GRANT SELECT, INSERT ON TABLE {table} TO {who}")
            else:
                statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {table} TO {who}")
            for (sequence,) in connection.execute(
                sa.text(
                    "SELECT s.relname FROM pg_depend d"
                    " JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
                    " JOIN pg_class t ON t.oid = d.refobjid"
                    " WHERE t.oid = to_regclass(:t)"
                ),
                {"t": table},
            ):
                statements.append(f"GRANT USAGE ON SEQUENCE {quote(sequence)} TO {who}")
        statements.append(f"REVOKE ALL ON TABLE {quote(VERSION_TABLE)} FROM {who}")
        statements.append(f"GRANT SELECT ON TABLE {quote(VERSION_TABLE)} TO {who}")
        for statement in statements:
            connection.exec_driver_sql(statement)
    return statements


def upgrade_database(url: str | None = None, *, runtime_role: str | None = None) -> str:
    """The explicit migration step (``fulfill db upgrade``, the demo): schema to head, then grants.

    Args:
        url: Database to migrate; default ``FULFILL_MIGRATION_DATABASE_URL``, else
            ``FULFILL_DATABASE_URL``. On PostgreSQL, a role that owns (or may create) the tables.
        runtime_role: PostgreSQL role to grant the run-time privileges to (default
            ``FULFILL_RUNTIME_ROLE``; none: no grants).

    Returns:
        The revision the database is now at.
    """
    settings = load_settings()
    url = url or settings.migration_database_url or settings.database_url
    runtime_role = runtime_role or settings.runtime_role
    engine = make_engine(url)
    if runtime_role and engine.dialect.name != "postgresql":  # refuse before changing anything
        engine.dispose()
        raise ValueError(f"FULFILL_RUNTIME_ROLE: roles exist only on PostgreSQL, not {engine.dialect.name}")
    try:
        upgrade(engine)
        if runtime_role:
            grant_runtime_role(engine, runtime_role)
        with engine.connect() as connection:
            revision = current_revision(connection)
    finally:
        engine.dispose()
    return revision or ""


@contextmanager
def transaction(engine: Engine | None = None, *, tenant: str | None = None) -> Iterator[Session]:
    """One database transaction: commits on success, rolls back on any exception.

    Args:
        tenant: Limit the transaction to one tenant's rows. On PostgreSQL, row-level security then
            hides every other tenant's row from every statement (and refuses writing one), whatever
            its ``WHERE`` clause — a second wall behind the tenant filters of the queries. ``None``:
            the engine's own scope (all tenants).
    """
    engine = engine or get_engine()
    with Session(engine, expire_on_commit=False) as session, session.begin():
        if tenant is not None and engine.dialect.name == "postgresql":
            session.connection().exec_driver_sql(
                "SELECT set_config(%(name)s, %(tenant)s, true)", {"name": TENANT_SETTING, "tenant": tenant}
            )
        yield session


def db_now(session: Session) -> datetime:
    """The database server's current time (UTC, aware)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        value = session.exec(sa.text("SELECT clock_timestamp()")).scalar_one()  # type: ignore[call-overload]
        return value.astimezone(UTC)  # type: ignore[no-any-return]
    text = session.exec(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()  # type: ignore[call-overload]
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def lock_clause(session: Session) -> bool:
    """Whether ``SELECT … FOR UPDATE`` is meaningful here (PostgreSQL); SQLite already holds the write lock."""
    return session.get_bind().dialect.name == "postgresql"


def insert_ignore(session: Session, table: Any, values: dict[str, Any]) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING``; returns whether a row was inserted."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).values(**values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    # rowcount is not reliable for ON CONFLICT DO NOTHING across drivers; RETURNING is.
    result = session.execute(stmt.returning(sa.literal_column("1")))
    return result.first() is not None
