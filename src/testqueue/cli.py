"""The `testqueue` command: serve, worker, migrate, account management, and the CI client
(`login`, `run`, `status`, `cancel`; see `testqueue.client`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from testqueue import errors, logs
from testqueue.client import commands as client
from testqueue.config import Settings
from testqueue.database import Database, migrate, shown_url, sqlite_path
from testqueue.runners import Registry
from testqueue.services.accounts import CONSOLE, Accounts, Bootstrap
from testqueue.vocabulary import Role

log = logging.getLogger(__name__)

EPILOG = """\
Settings come from the environment and a .env file in the working folder;
docs/settings.md lists them all. The most used: DATABASE_URL (default
sqlite:///./testqueue.db), MAX_CONCURRENT_EXECUTIONS (5), EXECUTION_TIMEOUT (300).
"""
MIN_PASSWORD = 8


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
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="PostgreSQL: serve from N processes sharing the port, each with a share of "
        "DATABASE_POOL_SIZE (and, unless --no-worker, a dispatcher); default 1",
    )

    commands.add_parser(
        "worker", help="run executions without the API (WORKER_CONCURRENCY, WORKER_TAGS)"
    )
    commands.add_parser("migrate", help="bring the database schema up to date, then exit")
    _add_prune_command(commands)
    _add_user_commands(commands)
    client.add_commands(commands)
    return parser


def _add_prune_command(commands: Any) -> None:
    prune = commands.add_parser(
        "prune",
        help="remove finished executions older than RETENTION_DAYS (--dry-run: only count)",
        description="Remove finished executions (completed, cancelled, expired) that ended "
        "more than RETENTION_DAYS (default 90) days ago, with their logs, steps, attempts "
        "and artifacts (database rows and files), in short transactions of PRUNE_BATCH_SIZE "
        "(500) so running workers keep claiming meanwhile. A batch's runs go only once all "
        "of them have finished and are that old; the batch keeps its counts and verdict. "
        "Workers do this on their own every RETENTION_INTERVAL seconds; this command runs "
        "one pass now and prints what it removed.",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="change nothing: say what would be removed"
    )
    prune.add_argument(
        "--days",
        type=float,
        metavar="N",
        help="keep this many days instead of RETENTION_DAYS (0 keeps everything)",
    )


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    from testqueue.queue import prune

    if args.days is not None and args.days < 0:
        print("testqueue: --days must be 0 or more", file=sys.stderr)
        return 2
    refusal = _new_database_refusal(settings, create=False)
    if refusal:
        print(f"testqueue: {refusal}", file=sys.stderr)
        return 2
    migrate(settings)

    async def run() -> prune.PruneReport:
        db = Database(settings)
        try:
            return await prune.prune(db, settings, days=args.days, dry_run=args.dry_run)
        finally:
            await db.dispose()

    report = asyncio.run(run())
    days = settings.retention_days if args.days is None else args.days
    print(f"testqueue: using {_shown_url(settings)}", file=sys.stderr)
    print("keeping everything (0 days)" if days <= 0 else report.summary())
    return 0


def _add_user_commands(commands: Any) -> None:
    user = commands.add_parser(
        "user",
        help="manage accounts",
        description="Manage accounts in the database DATABASE_URL names. Without DATABASE_URL, "
        "the default file ./testqueue.db must exist already, unless --create is given.",
    )
    user.add_argument(
        "--create", action="store_true", help="make a new database if there is none yet"
    )
    actions = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create an account")
    create.add_argument("username")
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    create.add_argument(
        "--password", help="the password (asked for when omitted; at least 8 characters)"
    )
    actions.add_parser("list", help="list every account with its role and state")
    password = actions.add_parser(
        "set-password", help="set an account's password; its sessions end"
    )
    password.add_argument("username")
    password.add_argument("--password", help="the new password (asked for when omitted)")
    disable = actions.add_parser(
        "disable", help="disable an account: its sessions end and its tokens stop working"
    )
    disable.add_argument("username")
    enable = actions.add_parser("enable", help="enable a disabled account again")
    enable.add_argument("username")


CLIENT_COMMANDS = {"login", "run", "status", "cancel"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        # The CI client talks to a server over HTTP: none of the server's settings apply.
        return client.main(args)
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
        if args.workers > 1:
            return serve_many(settings, args.host, args.port, args.workers, not args.no_worker)
        return serve(settings, args.host, args.port, with_worker=not args.no_worker)
    if args.command == "worker":
        migrate(settings)
        _run_loop(run_worker(settings))
        return 0
    if args.command == "migrate":
        migrate(settings)
        print("database is up to date")
        return 0
    if args.command == "prune":
        return _prune(args, settings)
    return manage_users(args, settings)


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


# `serve --workers N`: at most this many processes.
MAX_SERVE_WORKERS = 64
# How `serve --workers N` tells its processes what they serve (uvicorn builds each one's
# app by name, with no arguments).
_SERVED_ENV = "TESTQUEUE_SERVED_WITH_WORKER"


def serve_many(settings: Settings, host: str, port: int, workers: int, with_worker: bool) -> int:
    """`serve` in `workers` processes on one port (PostgreSQL only).

    The schema and the first admin are made here, once, before the processes
    start, so they never race each other; each then takes its share of the pool.
    """
    import uvicorn

    if settings.is_sqlite:
        print(
            "error: --workers needs PostgreSQL: SQLite takes one writing process. Run `serve` "
            "without --workers, or set DATABASE_URL to a PostgreSQL database.",
            file=sys.stderr,
        )
        return 2
    if not 1 <= workers <= MAX_SERVE_WORKERS:
        print(f"error: --workers takes 1..{MAX_SERVE_WORKERS}", file=sys.stderr)
        return 2
    migrate(settings)
    _run_loop(_bootstrap(settings))
    share = max(2, math.ceil(settings.database_pool_size / workers))
    os.environ["DATABASE_POOL_SIZE"] = str(share)
    os.environ[_SERVED_ENV] = "1" if with_worker else "0"
    uvicorn.run(
        "testqueue.cli:served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
    )
    return 0


def served_app() -> Any:
    """One process of `serve --workers N`: the app, from the environment its parent set."""
    from testqueue.app import create_app

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings, with_worker=os.environ.get(_SERVED_ENV) != "0")


async def _bootstrap(settings: Settings) -> None:
    """The signing key and the first admin, made once by the parent of `serve --workers`."""
    db = Database(settings)
    accounts = Accounts(settings, db)
    try:
        made = await accounts.start()
        if made is not None:
            _announce_admin(made)
    finally:
        accounts.close()
        await db.dispose()


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


def manage_users(args: argparse.Namespace, settings: Settings) -> int:
    """`testqueue user ...`: on the database named, never a new one made by mistake."""
    refusal = _new_database_refusal(settings, args.create)
    if refusal:
        print(f"testqueue: {refusal}", file=sys.stderr)
        return 2
    print(f"testqueue: using {_shown_url(settings)}", file=sys.stderr)
    command = args.user_command
    if command == "list":
        return _with_accounts(settings, _print_users)
    if command == "disable" or command == "enable":
        active = command == "enable"
        return _with_accounts(settings, lambda a: _set_active(a, args.username, active))
    password = args.password
    if password is None:
        password = getpass.getpass(f"password for {args.username}: ")
    if len(password) < MIN_PASSWORD:
        print(f"testqueue: the password needs at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 2
    if command == "set-password":
        return _with_accounts(settings, lambda a: _set_password(a, args.username, password))
    return _with_accounts(settings, lambda a: _create(a, args.username, Role(args.role), password))


def _new_database_refusal(settings: Settings, create: bool) -> str | None:
    """Why a command should not run here: it would make a new SQLite file nobody asked for."""
    path = sqlite_path(settings.database_url)
    explicit = "database_url" in settings.model_fields_set
    if create or explicit or path is None or path.exists():
        return None
    return (
        f"there is no database at {path.resolve()} (DATABASE_URL is not set, so the default "
        "file in the working folder is used): run this where `testqueue serve` runs, set "
        "DATABASE_URL, or pass --create to make a new database"
    )


def _shown_url(settings: Settings) -> str:
    path = sqlite_path(settings.database_url)
    if path is not None:
        return f"sqlite:///{path.resolve()}"
    return shown_url(settings.database_url)


def _with_accounts(settings: Settings, work: Callable[[Accounts], Awaitable[int]]) -> int:
    migrate(settings)

    async def run() -> int:
        db = Database(settings)
        accounts = Accounts(settings, db)
        try:
            return await work(accounts)
        finally:
            accounts.close()
            await db.dispose()

    return asyncio.run(run())


async def _print_users(accounts: Accounts) -> int:
    users = await accounts.list_users()
    print(f"{'id':>5}  {'username':<24} {'role':<7} {'state':<8} created")
    for user in users:
        state = "active" if user.is_active else "disabled"
        created = f"{user.created_at:%Y-%m-%d}"
        print(f"{user.id:>5}  {user.username:<24} {user.role:<7} {state:<8} {created}")
    return 0


async def _set_active(accounts: Accounts, username: str, active: bool) -> int:
    user = await accounts.find_user(username)
    await accounts.change_account(CONSOLE, user.id, None, active)
    print(f"{'enabled' if active else 'disabled'} {username!r}")
    return 0


async def _set_password(accounts: Accounts, username: str, password: str) -> int:
    user = await accounts.find_user(username)
    await accounts.reset_password(CONSOLE, user.id, password)
    print(f"password of {username!r} set; its sessions ended")
    return 0


async def _create(accounts: Accounts, username: str, role: Role, password: str) -> int:
    user_id = await accounts.create_user(username, password, role, CONSOLE)
    print(f"created {role} {username!r} (id {user_id})")
    return 0
