"""`testqueue login | run | status | cancel`: the CI client's commands and exit codes.

0  every execution passed (flaky ones included)
1  an execution failed or timed out
2  a usage or connection problem (or the wait was interrupted)
3  the batch was cancelled, or runs of it expired in the queue unstarted
4  an execution could not run (error)
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from pathlib import Path
from typing import Any

from testqueue.client import credentials, follow
from testqueue.client.http import Api, ClientError

EXIT = {"pass": 0, "fail": 1, "timeout": 1, "cancelled": 3, "expired": 3, "error": 4}
USAGE = 2


def add_commands(commands: Any) -> None:
    """The client's subcommands, beside the server's."""
    login = commands.add_parser("login", help="sign in to a server and keep a token (0600)")
    login.add_argument("--server", required=True, help="the server's address, http(s)://host:port")
    login.add_argument("--username", help="asked for when omitted")
    login.add_argument("--password", help="asked for when omitted")

    run = commands.add_parser(
        "run",
        help="queue a batch (test case ids, --suite, --tag) and optionally wait for its verdict",
        description="Queue test cases as one batch; with --wait, follow it and exit 0 only "
        "when every execution passed (1 failed or timed out, 2 usage or connection problem, "
        "3 cancelled or expired, 4 errored).",
    )
    run.add_argument("ids", nargs="*", type=int, help="test case ids, in order")
    run.add_argument("--suite", help="a suite, by name or id")
    run.add_argument("--tag", action="append", default=[], help="test cases with this tag")
    run.add_argument("--all-tags", action="store_true", help="with all of the tags, not any")
    run.add_argument("--rerun-failed", type=int, metavar="BATCH", help="rerun a batch's failures")
    run.add_argument("--priority", help="1..10 or high, medium, low")
    run.add_argument("--environment", help="a label the runs carry (staging, ...)")
    run.add_argument("--base-url", help="the site the runs test, instead of each test case's")
    run.add_argument("--retries", type=int, help="instead of each test case's own, 0..5")
    run.add_argument("--wait", action="store_true", help="follow the batch until its verdict")
    run.add_argument("--junit", type=Path, help="write the batch's JUnit XML here (with --wait)")
    run.add_argument(
        "--cancel-on-interrupt", action="store_true", help="Ctrl-C cancels the batch unasked"
    )
    _connection(run)

    status = commands.add_parser("status", help="the queue, or one batch")
    status.add_argument("batch", nargs="?", type=int)
    _connection(status)

    cancel = commands.add_parser("cancel", help="cancel a batch: waiting runs, and running ones")
    cancel.add_argument("batch", type=int)
    _connection(cancel)


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="default: TESTQUEUE_URL, or the last `login`")
    parser.add_argument("--token", help="default: TESTQUEUE_TOKEN, or the stored login")


def main(args: argparse.Namespace) -> int:
    """Run a client command; problems end as one line on stderr and exit 2."""
    try:
        return {"login": login, "run": run, "status": status, "cancel": cancel}[args.command](args)
    except ClientError as exc:
        print(f"testqueue: {exc.message}", file=sys.stderr)
        return exc.code


def login(args: argparse.Namespace) -> int:
    server = credentials.normal(args.server)
    username = args.username or input("username: ")
    password = args.password or getpass.getpass(f"password for {username}: ")
    api = Api(server)
    try:
        session = api.call("POST", "/auth/login", data={"username": username, "password": password})
        signed = Api(server, session["access_token"])
        name = f"testqueue CLI on {socket.gethostname()}"
        made = signed.call("POST", "/users/me/tokens", json={"name": name})
        signed.call("POST", "/auth/logout")
        signed.close()
    finally:
        api.close()
    path = credentials.remember(server, made["token"])
    print(f"signed in to {server} as {username}; token {made['prefix']}… kept in {path}")
    return 0


def _api(args: argparse.Namespace) -> Api:
    found = credentials.resolve(args.server, args.token)
    return Api(found.server, found.token)


def run(args: argparse.Namespace) -> int:
    if args.junit and not args.wait:
        raise ClientError("--junit needs --wait: the report is written once the batch ended")
    api = _api(args)
    try:
        made = _queue(api, args)
        batch = made["batch"]
        print(f"{made['message']}: {api.server}/batches/{batch['id']}")
        if not args.wait:
            return 0
        detail = _wait(api, batch["id"], args.cancel_on_interrupt)
        if detail is None:
            return USAGE
        print(follow.summary(detail, api.server))
        if args.junit:
            args.junit.write_text(api.call("GET", f"/batches/{batch['id']}/junit.xml"))
            print(f"JUnit XML written to {args.junit}")
        return EXIT.get(detail["verdict"], USAGE)
    finally:
        api.close()


def _queue(api: Api, args: argparse.Namespace) -> Any:
    options: dict[str, Any] = {
        "priority": _priority(args.priority),
        "environment": args.environment,
        "base_url": args.base_url,
        "triggered_by": "testqueue CLI",
    }
    if args.rerun_failed is not None:
        body: dict[str, Any] = {"only": "failed"}
        if options["priority"] is not None:
            body["priority"] = options["priority"]
        return api.call("POST", f"/batches/{args.rerun_failed}/rerun", json=body)
    if not (args.ids or args.suite or args.tag):
        raise ClientError("name what to run: test case ids, --suite, --tag or --rerun-failed")
    body = {k: v for k, v in options.items() if v is not None}
    body.update(test_case_ids=args.ids, tags=args.tag, tag_mode="all" if args.all_tags else "any")
    if args.suite:
        body["suite_id"] = _suite_id(api, args.suite)
    if args.retries is not None:
        body["retries"] = args.retries
    return api.call("POST", "/batches", json=body)


def _priority(raw: str | None) -> int | str | None:
    if raw is None:
        return None
    return int(raw) if raw.isascii() and raw.isdigit() else raw


def _suite_id(api: Api, suite: str) -> int:
    if suite.isascii() and suite.isdigit():
        return int(suite)
    found = api.call("GET", "/suites", params={"limit": 500})["items"]
    for item in found:
        if item["name"] == suite:
            return int(item["id"])
    names = ", ".join(item["name"] for item in found) or "none yet"
    raise ClientError(f"there is no suite named {suite!r} (suites: {names})")


def _wait(api: Api, batch_id: int, cancel_on_interrupt: bool) -> dict[str, Any] | None:
    try:
        return follow.wait(api, batch_id)
    except KeyboardInterrupt:
        if cancel_on_interrupt or _confirm(f"cancel batch {batch_id}? [y/N] "):
            api.call("POST", f"/batches/{batch_id}/cancel")
            print(f"batch {batch_id} cancelled", file=sys.stderr)
            return follow.wait(api, batch_id)
        print(f"stopped waiting; batch {batch_id} goes on", file=sys.stderr)
        return None


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):
        return False


def status(args: argparse.Namespace) -> int:
    api = _api(args)
    try:
        if args.batch is None:
            queue = api.call("GET", "/executions/queue/status", params={"limit": 20})
            print(
                f"{queue['active_count']} of {queue['max_concurrent']} slots busy, "
                f"{queue['queued_count']} waiting{' (paused)' if queue['paused'] else ''}"
            )
            for item in queue["queue"]:
                print(
                    f"  {item['queue_position']:>4}. #{item['execution_id']}  {item['wait_reason']}"
                )
            return 0
        detail = api.call("GET", f"/batches/{args.batch}")
        if detail["verdict"] is None:
            print(
                f"batch {detail['id']} ({detail['name']}): {detail['status']}, "
                f"{detail['done']} of {detail['total']} done"
            )
            return 0
        print(follow.summary(detail, api.server))
        return EXIT.get(detail["verdict"], USAGE)
    finally:
        api.close()


def cancel(args: argparse.Namespace) -> int:
    api = _api(args)
    try:
        batch = api.call("POST", f"/batches/{args.batch}/cancel")
        print(
            f"batch {batch['id']} cancelled: {batch['counts']['cancelled']} cancelled, "
            f"{batch['counts']['running']} stopping"
        )
        return 0
    finally:
        api.close()
