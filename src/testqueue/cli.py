"""The `testqueue` command: serve, worker, migrate, user create."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from testqueue import errors, logs
from testqueue.config import Settings
from testqueue.database import Database, migrate
from testqueue.runners import Registry
from testqueue.services.accounts import Accounts, Bootstrap
from testqueue.vocabulary import Role

log = logging.getLogger(__name__)

EPILOG = """\
Settings come from the environment and a .env file in the working folder;
docs/settings.md lists them all. The most used: DATABASE_URL (default
sqlite:///./testqueue.db), MAX_CONCURRENT_EXECUTIONS (5), EXECUTION_TIMEOUT (300).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testqueue",
        description="A durable priority queue that runs test executions within a global limit.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the API and dashboard (and run a worker unless --no-worker)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--no-worker", action="store_true", help="API only: run no executions in this process"
    )

    commands.add_parser(
        "worker", help="run executions without the API (WORKER_CONCURRENCY, WORKER_TAGS)"
    )
    commands.add_parser("migrate", help="bring the database schema up to date, then exit")

    user = commands.add_parser("user", help="manage accounts")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = user_commands.add_parser("create", help="create an account")
    create.add_argument("username")
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    create.add_argument(
        "--password", help="the password (asked for when omitted; at least 8 characters)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"testqueue: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        return _dispatch(args, settings)
    except errors.TestqueueError as exc:
        print(f"testqueue: {exc.message}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        return serve(settings, args.host, args.port, with_worker=not args.no_worker)
    if args.command == "worker":
        migrate(settings)
        _run_loop(run_worker(settings))
        return 0
    if args.command == "migrate":
        migrate(settings)
        print("database is up to date")
        return 0
    return create_user(settings, args.username, args.role, args.password)


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where installed (as uvicorn uses for `serve`), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def serve(settings: Settings, host: str, port: int, *, with_worker: bool) -> int:
    import uvicorn

    from testqueue.app import create_app

    app = create_app(settings, with_worker=with_worker, on_bootstrap=_announce_admin)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
    return 0


def _announce_admin(bootstrap: Bootstrap) -> None:
    if bootstrap.password is None:
        print(f"created account {bootstrap.username!r} with TESTQUEUE_ADMIN_PASSWORD")
    else:
        print(
            f"created account {bootstrap.username!r} with password {bootstrap.password}\n"
            "(shown once: sign in and keep it, or set TESTQUEUE_ADMIN_PASSWORD before first start)",
            flush=True,
        )


async def run_worker(settings: Settings, registry: Registry | None = None) -> None:
    """A dispatcher without the API, until SIGTERM or SIGINT."""
    from testqueue.dispatcher import Dispatcher

    db = Database(settings)
    dispatcher = Dispatcher(settings, db, registry or Registry(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await dispatcher.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await dispatcher.stop()
        await db.dispose()


def create_user(settings: Settings, username: str, role: str, password: str | None) -> int:
    if password is None:
        password = getpass.getpass(f"password for {username}: ")
    if len(password) < 8:
        print("testqueue: the password needs at least 8 characters", file=sys.stderr)
        return 2
    migrate(settings)

    async def create() -> int:
        db = Database(settings)
        try:
            return await Accounts(settings, db).create_user(username, password, Role(role))
        finally:
            await db.dispose()

    user_id = asyncio.run(create())
    print(f"created {role} {username!r} (id {user_id})")
    return 0
