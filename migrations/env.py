"""Alembic environment: run by ``ratiowatch db upgrade`` and at service start."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from ratiowatch_server.db import make_engine
from ratiowatch_server.models import Base

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "alembic_config() always sets sqlalchemy.url"
    engine = make_engine(url)
    is_sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if is_sqlite:
            # Batch migrations rebuild tables; with foreign keys on, rebuilding a parent deletes
            # its ON DELETE CASCADE children. The pragma only works outside a transaction.
            connection.execute(text("PRAGMA foreign_keys=OFF"))
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=is_sqlite,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `ratiowatch db upgrade`")
run_migrations_online()
