"""PostgreSQL connections that die in the pool are replaced at once, the claim's included."""

from __future__ import annotations

import asyncio

import psycopg

from testqueue.config import Settings
from testqueue.database import Database
from testqueue.queue import dialect, postgres


async def test_a_claim_on_a_dropped_connection_fails_once_then_reconnects(
    postgres_url: str,
) -> None:
    db = Database(Settings(database_url=postgres_url))
    try:
        all_in = asyncio.Barrier(4)

        async def hold() -> None:
            async with db.autocommit():
                await all_in.wait()

        # Three connections checked out at once, so the pool keeps three.
        holders = [asyncio.create_task(hold()) for _ in range(3)]
        await all_in.wait()
        await asyncio.gather(*holders)

        with psycopg.connect(postgres.libpq_dsn(postgres_url), autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name LIKE 'testqueue:%'"
            ).fetchone()
        assert dropped is not None and dropped[0] >= 3

        # The pool's connections are all dead. A checkout sees the server's goodbye on
        # the socket and connects afresh; one whose goodbye has not arrived yet fails
        # its claim once and is dropped. Either way no dead one is handed out twice.
        failed = 0
        for _ in range(4):
            try:
                async with dialect.POSTGRES.claiming(db, None) as conn:
                    assert conn is not None
            except psycopg.OperationalError:
                failed += 1
        assert failed <= 1
    finally:
        await db.dispose()
