"""JUnit XML: a batch (one `<testsuite>`) or one execution, for Jenkins, GitLab and friends.

Each execution is a `<testcase>`: `name` its test case's title, `classname`
the batch's name (its suite, or its tags), `time` its run time. A failed run
has a `<failure>`; one that errored or timed out an `<error>` (of type
`error` or `timeout`); a cancelled or unfinished one `<skipped>`; each with
the run's error message. `<system-out>` holds the log's tail and one line
per browser step; `flaky` and `attempts` are the test case's `<properties>`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from xml.etree import ElementTree as ET

from sqlalchemy import and_, case, func, select

from testqueue.database import Conn, Database
from testqueue.models import Execution as E
from testqueue.models import ExecutionLog, ExecutionStep
from testqueue.schemas.batches import ExecutionRow
from testqueue.services import batches
from testqueue.vocabulary import Result, Status

# Per test case, so a report of a thousand runs stays a few megabytes.
OUT_CHARS = 8_000


async def batch_report(db: Database, batch_id: int) -> bytes:
    detail = await batches.batch_detail(db, batch_id)
    async with db.read() as conn:
        outs = await _outputs(conn, [e["id"] for e in detail.executions])
    suite = _suite(detail.name, detail.executions, outs)
    suite.set("id", str(detail.id))
    suite.set("timestamp", detail.queued_at.strftime("%Y-%m-%dT%H:%M:%S"))
    properties = ET.Element("properties")
    _property(properties, "batch", detail.id)
    _property(properties, "status", detail.status)
    _property(properties, "verdict", detail.verdict or "unfinished")
    suite.insert(0, properties)
    return _document([suite])


async def execution_report(db: Database, execution_id: int) -> bytes:
    one = await batches.execution_row(db, execution_id)
    async with db.read() as conn:
        outs = await _outputs(conn, [execution_id])
    name = f"execution {execution_id}"
    return _document([_suite(name, [one], outs)])


def _document(suites: list[ET.Element]) -> bytes:
    root = ET.Element("testsuites")
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in suites)))
    root.set("time", _seconds(sum(float(s.get("time", "0")) for s in suites)))
    root.extend(suites)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _suite(name: str, items: Sequence[ExecutionRow], outs: dict[int, str]) -> ET.Element:
    suite = ET.Element("testsuite", name=_xml_text(name))
    totals = {"failures": 0, "errors": 0, "skipped": 0}
    time = 0.0
    for item in items:
        case_ = _testcase(name, item, outs.get(item["id"], ""))
        suite.append(case_)
        time += item["run_seconds"] or 0.0
        for tag, total in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            if case_.find(tag) is not None:
                totals[total] += 1
    suite.set("tests", str(len(items)))
    for key, value in totals.items():
        suite.set(key, str(value))
    suite.set("time", _seconds(time))
    return suite


def _testcase(classname: str, item: ExecutionRow, out: str) -> ET.Element:
    title = _xml_text(item["test_case_title"] or f"test case {item['test_case_id']}")
    case_ = ET.Element(
        "testcase",
        name=title,
        classname=_xml_text(classname),
        time=_seconds(item["run_seconds"] or 0.0),
    )
    properties = ET.SubElement(case_, "properties")
    _property(properties, "execution", item["id"])
    _property(properties, "flaky", "true" if item["flaky"] else "false")
    _property(properties, "attempts", item["attempt"])
    message = _xml_text(item["error_message"] or "")
    if item["status"] in (Status.CANCELLED, Status.EXPIRED):
        ET.SubElement(case_, "skipped", message=message or item["status"])
    elif item["status"] != Status.COMPLETED:
        ET.SubElement(case_, "skipped", message=f"not finished: {item['status']}")
    elif item["result"] == Result.FAIL:
        ET.SubElement(case_, "failure", message=message, type="fail").text = message
    elif item["result"] in (Result.ERROR, Result.TIMEOUT):
        ET.SubElement(case_, "error", message=message, type=item["result"]).text = message
    if out:
        ET.SubElement(case_, "system-out").text = out
    return case_


def _property(parent: ET.Element, name: str, value: object) -> None:
    ET.SubElement(parent, "property", name=name, value=str(value))


def _seconds(value: float) -> str:
    return f"{value:.3f}"


async def _outputs(conn: Conn, ids: list[int]) -> dict[int, str]:
    """Per execution: its browser steps, a line each, then the tail of its log."""
    if not ids:
        return {}
    lines: dict[int, list[str]] = defaultdict(list)
    steps = await conn.execute(
        select(ExecutionStep)
        .join(E, and_(E.id == ExecutionStep.execution_id, E.attempt == ExecutionStep.attempt))
        .where(ExecutionStep.execution_id.in_(ids))
        .order_by(ExecutionStep.execution_id, ExecutionStep.number)
    )
    for (step,) in steps:
        text = f"step {step.number} {step.action}: {step.result}"
        if step.description:
            text += f" - {step.description}"
        if step.error_message:
            text += f" ({step.error_message})"
        lines[step.execution_id].append(text)
    length = func.length(ExecutionLog.content)
    start = case((length > OUT_CHARS, length - OUT_CHARS + 1), else_=1)
    logs = await conn.execute(
        select(ExecutionLog.execution_id, func.substr(ExecutionLog.content, start))
        .join(E, and_(E.id == ExecutionLog.execution_id, E.attempt == ExecutionLog.attempt))
        .where(ExecutionLog.execution_id.in_(ids))
    )
    tails = {row[0]: _xml_text(row[1] or "") for row in logs}
    return {
        i: "\n".join([*lines.get(i, []), *([tails[i]] if tails.get(i) else [])])
        for i in ids
        if lines.get(i) or tails.get(i)
    }


def _xml_text(text: str) -> str:
    """XML 1.0 cannot hold most control characters: they become the replacement character."""
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", text)


_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
