"""The transition table, priority words and the log cap: pure logic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from testqueue.recorder import RunRecord
from testqueue.schemas import PriorityChange
from testqueue.vocabulary import TRANSITIONS, Status, StepRecord, decode_tags, encode_tags


def test_finished_states_are_final() -> None:
    assert TRANSITIONS[Status.COMPLETED] == frozenset()
    assert TRANSITIONS[Status.CANCELLED] == frozenset()
    assert Status.RUNNING in TRANSITIONS[Status.PENDING]
    assert Status.PENDING in TRANSITIONS[Status.RUNNING], "recovery puts a run back in line"


@pytest.mark.parametrize(
    ("given", "number"), [("high", 1), ("medium", 5), ("low", 10), ("HIGH", 1), (1, 1), (10, 10)]
)
def test_priority_words_and_numbers(given: object, number: int) -> None:
    assert PriorityChange.model_validate({"priority": given}).priority == number


@pytest.mark.parametrize("given", [0, 11, -1, 10**30, True, 3.5, "urgent", None, [1]])
def test_priority_out_of_range_or_wrong_type_is_refused(given: object) -> None:
    with pytest.raises(ValidationError):
        PriorityChange.model_validate({"priority": given})


def test_tags_are_stored_sorted_and_fenced() -> None:
    assert encode_tags(["linux", "Browser", " linux "]) == ",browser,linux,"
    assert encode_tags([]) == ""
    assert decode_tags(",browser,linux,") == ["browser", "linux"]


def test_log_keeps_head_and_tail_and_says_what_was_cut() -> None:
    record = RunRecord(1, max_log_bytes=4000)
    for n in range(1000):
        record.log(f"line {n:04d}\n")
    text = record.text()
    assert text.startswith("line 0000\n")
    assert text.endswith("line 0999\n")
    assert "[... 6000 bytes of output cut ...]" in text
    assert len(text.encode()) <= 4000 + 50


def test_progress_is_reported_once_until_something_changes() -> None:
    record = RunRecord(7, max_log_bytes=1024)
    assert record.take_progress() is None
    record.log("hello\n")
    record.step(StepRecord(number=1, action="goto", result="pass"))
    progress = record.take_progress()
    assert progress is not None
    assert (progress.log, len(progress.steps or [])) == ("hello\n", 1)
    assert record.take_progress() is None
    record.restore(progress)
    assert record.take_progress() is not None


def test_step_counts_treat_error_as_failed() -> None:
    record = RunRecord(1, 1024)
    for result in ("pass", "pass", "fail", "error", "skip"):
        record.step(StepRecord(number=1, action="click", result=result))
    assert record.step_counts() == (5, 2, 2, 1)
