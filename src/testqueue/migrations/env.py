"""Alembic environment: runs migrations with the blocking driver of DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from testqueue.models import Base

MIGRATION_LOCK_KEY = 0x7465_7374_6D67  # "testmg"

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Hosts starting together would otherwise race to create the same tables;
            # the lock is the connection's and ends with it.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
