"""kill -9 of a real `testqueue serve` while webhook deliveries are in flight and pending:
after a restart every event arrives, each delivery's idempotency key among them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from process import Server, wait_for

RUNS = 12  # 36 events: more than a worker sends at once (16), so some stay pending


class Receiver(ThreadingHTTPServer):
    """Keeps every request; holds each one open while `holding` is set."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.held = 0
        self.holding = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def keys(self) -> set[str]:
        with self.lock:
            return {key for key, _ in self.received}


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        receiver = self.server
        with receiver.lock:
            receiver.received.append((self.headers["X-Testqueue-Delivery"], json.loads(body)))
            receiver.held += receiver.holding.is_set()
        while receiver.holding.is_set():  # until the test lets go, or the sender is gone
            receiver.holding.wait(0.05)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    serving = Receiver()
    thread = threading.Thread(target=serving.serve_forever, daemon=True)
    thread.start()
    yield serving
    serving.holding.clear()
    serving.shutdown()
    serving.server_close()


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    serve = Server(
        tmp_path,
        database_url,
        webhook_allow_private="true",
        webhook_timeout=5,
        webhook_retry_base=0.2,
    )
    yield serve
    serve.stop()


@pytest.mark.slow
def test_kill_9_while_sending_loses_no_event(server: Server, receiver: Receiver) -> None:
    server.start()
    events = ["execution.queued", "execution.started", "execution.finished"]
    hook = server.call("POST", "/webhooks", json={"url": receiver.url, "events": events})
    receiver.holding.set()
    test_id = server.call("POST", "/tests", json={"title": "quick", "command": ["true"]})["id"]
    ids = [server.call("POST", f"/executions/tests/{test_id}/run")["id"] for _ in range(RUNS)]

    def deliveries() -> list[dict[str, Any]]:
        found = server.call("GET", f"/webhooks/{hook['id']}/deliveries?limit=500")
        return list(found["items"])

    wait_for(lambda: receiver.held, lambda n: n >= 1)
    # Every event is in the outbox: some in flight (held by the receiver), the rest pending.
    written = wait_for(deliveries, lambda d: len(d) == 3 * RUNS)
    assert all(d["state"] == "pending" for d in written)
    server.kill9()
    receiver.holding.clear()

    server.start()
    wait_for(receiver.keys, lambda keys: keys >= {str(d["id"]) for d in written}, timeout=60)
    final = wait_for(deliveries, lambda d: {x["state"] for x in d} == {"delivered"}, timeout=60)
    assert {d["id"] for d in final} == {d["id"] for d in written}
    with receiver.lock:
        heard = {(doc["execution"]["id"], doc["event"]) for _, doc in receiver.received}
    assert heard == {(run, event) for run in ids for event in events}
