"""The schema: migrations go up and down on both databases, and the models match them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from conftest import POSTGRES_URL
from testqueue.database import alembic_config, sync_url
from testqueue.models import Base
from testqueue.queue.postgres import libpq_dsn


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it, of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"testqueue_migrations_{os.getpid()}"
    admin = libpq_dsn(make_url(POSTGRES_URL).set(database="postgres").render_as_string(False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _differences(url: str) -> list[object]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_up_down_and_up_again_leaves_the_schema_the_models_describe(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    assert _tables(empty_database) == set(Base.metadata.tables)
    command.downgrade(config, "base")
    assert _tables(empty_database) == set()
    command.upgrade(config, "head")
    assert _differences(empty_database) == []
    if empty_database.startswith("sqlite"):
        # SQLite rebuilds a table to alter it; the line counts' triggers must survive.
        engine = create_engine(sync_url(empty_database))
        with engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            assert {n for (n,) in names} >= {
                "line_counts_insert",
                "line_counts_delete",
                "line_counts_leave",
                "line_counts_join",
            }
        engine.dispose()


def test_processes_started_together_on_a_new_database_migrate_it_once(
    empty_database: str, tmp_path: Path
) -> None:
    """`serve`, `worker` and `migrate` started at the same instant on an empty database."""
    env = {**os.environ, "DATABASE_URL": empty_database, "LOG_FORMAT": "text"}
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "testqueue", "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120)[0].decode() for process in started]
    assert [process.returncode for process in started] == [0] * 4, outputs
    assert _differences(empty_database) == []
