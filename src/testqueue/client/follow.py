"""Waiting for a batch: by the server's event stream, showing progress as it goes.

On a terminal one line is redrawn: a bar, where the batch's first waiting
run stands in line, what runs, passed / failed / flaky counts, the time
waited. Elsewhere (a CI log) a plain line is written for each execution as
it finishes. The stream ends when the batch has a verdict; if the server
ends it earlier (it does every few minutes) the client listens again.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from testqueue.client.http import Api

BAR_WIDTH = 24
# A stream the server ends before the verdict is opened again this many times in a row.
RECONNECTS = 1000


class Progress:
    """What the person waiting sees."""

    def __init__(self, out: TextIO, server: str) -> None:
        self.out = out
        self.server = server
        self.tty = out.isatty()
        self.began = time.monotonic()
        self._reported: set[int] = set()
        self._drawn = False

    def update(self, batch: dict[str, Any], detail: dict[str, Any] | None) -> None:
        if self.tty:
            self._draw(batch)
        elif detail is not None:
            self._lines(detail)

    def _draw(self, batch: dict[str, Any]) -> None:
        total, done = batch["total"], batch["done"]
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        counts = batch["counts"]
        line = (
            f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} "
            f"{counts['running']} running, {counts['pending']} waiting | "
            f"{counts['passed']} passed, {counts['failed'] + counts['timed_out']} failed, "
            f"{counts['errored']} errored, {counts['flaky']} flaky | "
            f"{time.monotonic() - self.began:.0f} s"
        )
        self.out.write(line + "\x1b[K")
        self.out.flush()
        self._drawn = True

    def _lines(self, detail: dict[str, Any]) -> None:
        for item in detail["executions"]:
            if item["status"] in ("pending", "running") or item["id"] in self._reported:
                continue
            self._reported.add(item["id"])
            self.out.write(f"{describe(item)}\n")
        self.out.flush()

    def finish(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()


def describe(item: dict[str, Any]) -> str:
    outcome = item["result"] or item["status"]
    if item.get("flaky"):
        outcome += " (flaky)"
    seconds = item.get("run_seconds")
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    title = item.get("test_case_title") or f"test case {item['test_case_id']}"
    return f"#{item['id']} {title}: {outcome}{took}"


def wait(api: Api, batch_id: int, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Until the batch has a verdict; returns its detail, every execution in it."""
    progress = Progress(out, api.server)
    last_done = -1
    try:
        for _ in range(RECONNECTS):
            for event, data in api.events(f"/batches/{batch_id}/events"):
                if event != "batch":
                    continue
                batch = json.loads(data)
                detail = None
                if not progress.tty and batch["done"] != last_done:
                    detail = api.call("GET", f"/batches/{batch_id}")
                    last_done = batch["done"]
                progress.update(batch, detail)
                if batch["verdict"] is not None:
                    final: dict[str, Any] = api.call("GET", f"/batches/{batch_id}")
                    if not progress.tty:
                        progress.update(batch, final)
                    return final
        return dict(api.call("GET", f"/batches/{batch_id}"))
    finally:
        progress.finish()


def summary(detail: dict[str, Any], server: str) -> str:
    """The table printed at the end, with a link to each execution that did not pass."""
    counts = detail["counts"]
    lines = [
        f"batch {detail['id']} ({detail['name']}): {detail['verdict']}",
        f"  {counts['passed']} passed ({counts['flaky']} flaky), {counts['failed']} failed, "
        f"{counts['errored']} errored, {counts['timed_out']} timed out, "
        f"{counts['cancelled']} cancelled; {detail['total']} in all"
        + (f", {detail['duration_seconds']:.1f} s" if detail.get("duration_seconds") else ""),
    ]
    bad = [e for e in detail["executions"] if e["result"] != "pass"]
    if bad:
        lines.append("  not passed:")
        width = max(len(describe(e)) for e in bad)
        for item in bad:
            lines.append(f"    {describe(item):<{width}}  {server}/executions/{item['id']}")
    return "\n".join(lines)
