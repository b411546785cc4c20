"""What a webhook says: the event with the facts copied when it happened.

`json` sends the whole of it; `slack` sends `{"text": ...}`, one line that
Slack (and most chat tools' incoming webhooks) show as it is.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from testqueue.models import as_utc
from testqueue.queue import outbox
from testqueue.queue.deliveries import Due
from testqueue.vocabulary import PayloadFormat

_RUN_FACTS = ("status", "result", "attempt", "priority", "test_case_id", "user_id", "batch_id")


def _stamp(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def document(due: Due) -> dict[str, Any]:
    """The full payload: `id` (the delivery's, stable across retries), `event`,
    `occurred_at`, and `execution`, `batch` or `queue`."""
    facts = due.facts
    event = facts["event"]
    found: dict[str, Any] = {
        "id": due.id,
        "event": event,
        "occurred_at": _stamp(facts["occurred_at"]),
    }
    if event in outbox.EXECUTION_EVENTS:
        found["execution"] = {
            "id": facts["execution_id"],
            **{name: facts[name] for name in _RUN_FACTS},
            "test_case_title": facts["test_case_title"],
        }
    elif event == outbox.BATCH_FINISHED:
        found["batch"] = {
            "id": facts["batch_id"],
            "name": facts["batch_name"],
            "suite_id": facts["suite_id"],
            "user_id": facts["user_id"],
            "total": facts["batch_total"],
            **facts.get("batch_counts", {}),
        }
    else:
        found["queue"] = {"paused": event == outbox.PAUSED}
    return found


def text(due: Due) -> str:
    """One line for people."""
    facts = due.facts
    event = facts["event"]
    if event in outbox.EXECUTION_EVENTS:
        title = facts["test_case_title"] or f"test case {facts['test_case_id']}"
        said = event.removeprefix("execution.")
        if facts["result"]:
            said += f": {facts['result']}"
        return f"Execution #{facts['execution_id']} ({title}) {said}"
    if event == outbox.BATCH_FINISHED:
        verdict = facts.get("batch_counts", {}).get("verdict", "")
        return f"Batch #{facts['batch_id']} ({facts['batch_name']}) finished: {verdict}"
    return "The queue was paused" if event == outbox.PAUSED else "The queue was resumed"


def body(due: Due) -> bytes:
    """The request body, in the subscription's format."""
    content = {"text": text(due)} if due.payload_format == PayloadFormat.SLACK else document(due)
    return json.dumps(content, separators=(",", ":")).encode()
