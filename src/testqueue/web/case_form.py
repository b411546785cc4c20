"""The test case form: its text fields to the API's `TestCaseCreate` and its problems to fields.

The checks are the API's own (`schemas.TestCaseCreate`, then the test case
routes' runner checks); this module only translates. Each problem is filed
under the field it is about, so the page can show it next to that field and
point the field at it with `aria-describedby`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from testqueue.schemas import TestCaseCreate, TestCasePublic
from testqueue.schemas.common import problem_message
from testqueue.vocabulary import (
    MAX_CONCURRENCY_LIMIT,
    MAX_RETRIES,
    PriorityWord,
    RunnerKind,
    TestType,
    parse_whole,
)
from testqueue.web import forms

TEXT_FIELDS = (
    "title",
    "description",
    "expected_result",
    "preconditions",
    "required_tags",
    "tags",
    "retries",
    "retry_on",
    "concurrency_key",
)
LIST_FIELDS = ("required_tags", "tags", "retry_on")
CHOICE_FIELDS = ("test_type", "priority", "runner", "dedupe")
BLOCK_FIELDS = (
    "command",
    "steps",
    "test_data",
    "timeout_seconds",
    "concurrency_limit",
    "queue_timeout_seconds",
)
FIELDS = (*TEXT_FIELDS, *CHOICE_FIELDS, *BLOCK_FIELDS)
GENERAL = "form"
# Form order, for the summary of problems at the top of the form.
LABELS = {
    "title": "Title",
    "runner": "Runner",
    "test_type": "Type",
    "priority": "Priority",
    "description": "Description",
    "steps": "Steps",
    "command": "Command",
    "test_data": "Test data",
    "timeout_seconds": "Timeout",
    "required_tags": "Required worker tags",
    "tags": "Tags",
    "retries": "Retries",
    "retry_on": "Retry after",
    "concurrency_key": "Concurrency key",
    "concurrency_limit": "Key limit",
    "queue_timeout_seconds": "Queue timeout",
    "dedupe": "Dedupe",
    "preconditions": "Preconditions",
    "expected_result": "Expected result",
}
DEFAULTS = {
    "test_type": TestType.E2E.value,
    "priority": PriorityWord.MEDIUM.value,
    "runner": RunnerKind.BROWSER.value,
    "dedupe": "no",
    "concurrency_limit": "1",
}


class FormProblems(Exception):
    """The form cannot be saved; `problems` maps each field (or `form`) to its messages."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(m for messages in problems.values() for m in messages))


@dataclass
class CaseForm:
    """What the form shows: the values as typed and the problems by field."""

    values: dict[str, str]
    problems: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> list[tuple[str, str, str]]:
        """Every problem as (field, label, message), in the order the form shows them."""
        order = [GENERAL, *LABELS]
        return [
            (name, LABELS.get(name, ""), message)
            for name in sorted(self.problems, key=lambda n: order.index(n) if n in order else 0)
            for message in self.problems[name]
        ]

    @classmethod
    def blank(cls) -> CaseForm:
        return cls({name: DEFAULTS.get(name, "") for name in FIELDS})

    @classmethod
    def of(cls, case: TestCasePublic) -> CaseForm:
        values = {name: str(getattr(case, name) or "") for name in FIELDS}
        values["command"] = "\n".join(case.command or [])
        values["steps"] = json.dumps(case.steps, indent=2) if case.steps else ""
        values["test_data"] = json.dumps(case.test_data, indent=2) if case.test_data else ""
        for name in LIST_FIELDS:
            values[name] = ", ".join(getattr(case, name))
        values["retries"] = str(case.retries)
        values["timeout_seconds"] = _number_text(case.timeout_seconds)
        values["queue_timeout_seconds"] = _number_text(case.queue_timeout_seconds)
        values["concurrency_limit"] = str(case.concurrency_limit)
        values["dedupe"] = "yes" if case.dedupe else "no"
        return cls(values)

    @classmethod
    def submitted(cls, form: FormData) -> CaseForm:
        values = {name: forms.text(form, name) for name in FIELDS}
        raw_command = form.get("command")
        # Arguments keep their inner spaces; only the line breaks between them go.
        if isinstance(raw_command, str):
            values["command"] = raw_command.replace("\r\n", "\n").strip("\n")
        return cls(values)


def _number_text(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def _json_field(
    values: dict[str, str], name: str, empty: Any, problems: dict[str, list[str]]
) -> Any:
    raw = values[name].strip()
    if not raw:
        return empty
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        problems.setdefault(name, []).append(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        )
    except RecursionError:
        problems.setdefault(name, []).append("nested too deeply: at most 100 levels")
    return empty


def _seconds(values: dict[str, str], name: str, problems: dict[str, list[str]]) -> float | None:
    raw = values[name].strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        problems.setdefault(name, []).append("must be a number of seconds")
        return None


def _whole(
    values: dict[str, str], name: str, bounds: tuple[int, int], problems: dict[str, list[str]]
) -> int:
    raw = values[name].strip()
    if not raw:
        return bounds[0]
    try:
        return parse_whole(raw, *bounds, LABELS[name].lower())
    except ValueError as exc:
        problems.setdefault(name, []).append(str(exc))
        return bounds[0]


def to_body(form: CaseForm) -> TestCaseCreate:
    """The API body the form describes; `FormProblems` when any field is wrong."""
    values = form.values
    problems: dict[str, list[str]] = {}
    data: dict[str, Any] = {name: values[name] for name in TEXT_FIELDS + CHOICE_FIELDS}
    for name in LIST_FIELDS:
        data[name] = [t for t in re.split(r"[,\s]+", values[name]) if t]
    data["retries"] = _whole(values, "retries", (0, MAX_RETRIES), problems)
    data["concurrency_limit"] = _whole(
        values, "concurrency_limit", (1, MAX_CONCURRENCY_LIMIT), problems
    )
    data["concurrency_key"] = values["concurrency_key"].strip() or None
    data["dedupe"] = values["dedupe"] == "yes"
    data["command"] = (
        [line.rstrip("\r") for line in values["command"].split("\n") if line.strip()]
        if values["runner"] == RunnerKind.COMMAND
        else None
    )
    data["steps"] = _json_field(values, "steps", [], problems)
    data["test_data"] = _json_field(values, "test_data", {}, problems)
    data["timeout_seconds"] = _seconds(values, "timeout_seconds", problems)
    data["queue_timeout_seconds"] = _seconds(values, "queue_timeout_seconds", problems)
    try:
        body = TestCaseCreate.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            name, message = _placed(error)
            problems.setdefault(name, []).append(message)
    if problems:
        raise FormProblems(problems)
    return body


def _placed(error: Any) -> tuple[str, str]:
    """The field a pydantic error belongs to, and its message in plain words."""
    location = [str(part) for part in error.get("loc", ())]
    message = problem_message(error)
    if location and location[0] in FIELDS:
        inner = ".".join(location[1:])
        if location[0] == "command" and inner.isdigit():
            inner = f"line {int(inner) + 1}"
        return location[0], f"{inner}: {message}" if inner else message
    return field_of(message), message


def field_of(message: str) -> str:
    """The field a message from the test case checks is about, from the words it uses."""
    lowered = message.lower()
    for name, words in (
        ("steps", ("step ", "steps")),
        ("command", ("`command", "command[", "argv")),
        ("runner", ("runner", "command test case")),
        ("test_data", ("test_data",)),
    ):
        if any(word in lowered for word in words):
            return name
    head = message.split(":", 1)[0].split(".", 1)[0].strip()
    return head if head in FIELDS else GENERAL


def problem_of(message: str) -> dict[str, list[str]]:
    """A message from the API's checks filed under its field; browser step problems split."""
    name = field_of(message)
    head = message.split(":", 1)[0].split(".", 1)[0].strip()
    if name == head and ":" in message:
        message = message.split(":", 1)[1].strip()
    if name == "steps":
        return {name: [part.strip() for part in message.split("; ") if part.strip()]}
    return {name: [message]}
