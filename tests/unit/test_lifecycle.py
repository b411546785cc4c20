"""The transition table, priority words and the log cap: pure logic."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from testqueue import errors
from testqueue.models import Execution
from testqueue.queue import moves
from testqueue.recorder import RunRecord
from testqueue.schemas import PriorityChange
from testqueue.vocabulary import (
    MAX_BIGINT,
    MAX_INT_ID,
    PRIORITY_WORDS,
    TRANSITIONS,
    Status,
    StepRecord,
    decode_tags,
    encode_tags,
    may_move,
    parse_id,
    parse_priority,
    parse_whole,
    priority_word,
)
from testqueue.web.render import priority_label


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


@pytest.mark.parametrize(("source", "target"), list(itertools.product(Status, Status)))
def test_every_pair_of_statuses_is_built_or_refused_by_the_table(
    source: Status, target: Status
) -> None:
    if not may_move(source, target):
        with pytest.raises(errors.InvalidTransition):
            moves.move(source, target)
        with pytest.raises(errors.InvalidTransition):
            moves.move_either(source, [], target)
        return
    sql = str(moves.move(source, target).compile(compile_kwargs={"literal_binds": True}))
    assert f"SET status='{target}'" in sql
    assert sql.endswith(f"WHERE executions.status = '{source}'")


def test_a_move_cannot_smuggle_its_status_in_as_a_value() -> None:
    smuggled: dict[str, Any] = {"status": Status.COMPLETED}
    with pytest.raises(TypeError):
        moves.keep(Status.PENDING, **smuggled)
    with pytest.raises(TypeError):
        moves.move(Status.PENDING, Status.CANCELLED, **smuggled)


def test_a_move_with_several_targets_checks_each_of_them() -> None:
    with pytest.raises(errors.InvalidTransition):
        moves.move_either(
            Status.PENDING,
            [(Execution.cancel_requested.is_(True), Status.CANCELLED)],
            Status.COMPLETED,
        )


def test_priority_words_read_both_ways_from_one_table() -> None:
    for word, number in PRIORITY_WORDS.items():
        assert priority_word(number) == word
        assert parse_priority(word.upper()) == number
    assert priority_label(1) == "1 (high)"
    assert priority_label(2) == "2"


@pytest.mark.parametrize(
    "text", ["²", "\N{ARABIC-INDIC DIGIT ONE}", "1e3", " ", "", "--1", "0x10", "1" * 30]
)
def test_numbers_are_ascii_digits_within_bounds(text: str) -> None:
    with pytest.raises(ValueError):
        parse_whole(text, 0, MAX_BIGINT)
    assert parse_id(text) is None


def test_whole_numbers_within_bounds_are_read() -> None:
    assert parse_whole(" 42 ", 1, 100) == 42
    assert parse_whole("-3", -5, 5) == -3
    assert parse_id(str(MAX_INT_ID)) == MAX_INT_ID
    assert parse_id(str(MAX_INT_ID + 1)) is None
