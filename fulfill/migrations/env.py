"""Alembic environment: runs against the engine fulfill hands it (see fulfill.db.alembic_config)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import fulfill.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from fulfill.db import make_engine
from fulfill.settings import load_settings

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:  # not run through fulfill.db.upgrade: the migration role's URL
        settings = load_settings()
        engine = make_engine(settings.migration_database_url or settings.database_url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
