"""Database access: engines, transactions, the database clock, and migrations.

SQLite (the embedded default) runs every write transaction as ``BEGIN IMMEDIATE`` so claims
and ledger appends serialise exactly as ``SELECT … FOR UPDATE`` makes them on PostgreSQL.
All times that matter (leases, TTL, ledger) come from the database's clock, never the worker's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fulfill.settings import load_settings

_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()
MIGRATIONS = Path(__file__).with_name("migrations")


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
    """Create an engine for ``url`` with fulfill's per-dialect settings."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def get_engine(url: str | None = None, *, migrate: bool = True) -> Engine:
    """The cached engine for ``url`` (default: ``FULFILL_DATABASE_URL``), migrated to head once."""
    url = url or load_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        if migrate and url not in _migrated:
            upgrade(engine)
            _migrated.add(url)
    return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, forked workers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _migrated.clear()


def alembic_config(engine: Engine) -> Config:
    """An Alembic config bound to ``engine`` (used by ``fulfill db upgrade`` and tests)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(alembic_config(engine), revision)


@contextmanager
def transaction(engine: Engine | None = None) -> Iterator[Session]:
    """One database transaction: commits on success, rolls back on any exception."""
    engine = engine or get_engine()
    with Session(engine, expire_on_commit=False) as session, session.begin():
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
