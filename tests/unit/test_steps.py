"""Validation of browser steps: what the API accepts, and how it names what it refuses."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest

from testqueue.runners import steps

ONE_OF_EACH: list[dict[str, Any]] = [
    {"action": "goto", "url": "/login"},
    {"action": "goto", "url": "https://example.test/a?b=c", "wait_until": "domcontentloaded"},
    {"action": "click", "selector": "text=Sign in", "description": "submit", "timeout_ms": 500},
    {"action": "fill", "selector": "#user", "value": ""},
    {"action": "press", "selector": "#user", "key": "Enter"},
    {"action": "select", "selector": "#role", "value": "dev"},
    {"action": "select", "selector": "#tags", "value": ["a", "b"]},
    {"action": "check", "selector": "#remember"},
    {"action": "uncheck", "selector": "#remember"},
    {"action": "hover", "selector": "role=button[name='Help']"},
    {"action": "wait_for", "selector": "#spinner", "state": "hidden"},
    {"action": "wait_for", "selector": "#list"},
    {"action": "wait_for", "state": "networkidle"},
    {"action": "wait_for"},
    {"action": "expect_visible", "selector": "#greeting"},
    {"action": "expect_hidden", "selector": "#error"},
    {"action": "expect_text", "selector": "#greeting", "contains": "Welcome"},
    {"action": "expect_text", "selector": "#greeting", "equals": "Welcome, alice"},
    {"action": "expect_text", "selector": "#count", "regex": r"^\d+ items$"},
    {"action": "expect_url", "contains": "/welcome"},
    {"action": "expect_title", "regex": "^Dash"},
    {"action": "screenshot"},
    {"action": "screenshot", "name": "after-login", "full_page": True},
]


def problems(raw: Any) -> list[str]:
    with pytest.raises(steps.StepError) as caught:
        steps.validate_steps(raw)
    return caught.value.problems


def test_every_action_is_accepted() -> None:
    canonical = steps.validate_steps(ONE_OF_EACH)

    assert [step["action"] for step in canonical] == [step["action"] for step in ONE_OF_EACH]
    assert {step["action"] for step in ONE_OF_EACH} == set(steps.ACTIONS)


def test_canonical_form_keeps_what_was_given_and_drops_defaults() -> None:
    canonical = steps.validate_steps(
        [
            {"action": "click", "selector": "#go", "timeout_ms": 500, "description": "go"},
            {"action": "goto", "url": "/", "wait_until": "load"},
        ]
    )

    assert canonical == [
        {"action": "click", "selector": "#go", "timeout_ms": 500, "description": "go"},
        {"action": "goto", "url": "/"},
    ]


def test_actions_list_matches_the_union() -> None:
    union = get_args(get_args(steps.Step)[0])
    tags = {get_args(model.model_fields["action"].annotation)[0] for model in union}

    assert tags == set(steps.ACTIONS)


def test_missing_argument_names_the_step_and_the_field() -> None:
    raw = [{"action": "goto", "url": "/"}, {"action": "goto", "url": "/"}, {"action": "click"}]

    assert problems(raw) == ["step 3 (click): missing 'selector'"]


def test_unknown_action_lists_the_known_ones() -> None:
    [problem] = problems([{"action": "tap", "selector": "#a"}])

    assert problem.startswith("step 1 (tap): unknown action 'tap'; known: goto, click,")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"selector": "#a"}, "step 1: missing 'action'"),
        ({"action": 3}, "step 1: 'action' must be a string"),
        ("click #a", "step 1: a step must be an object with an 'action'"),
        ({"action": "click", "selector": "#a", "button": "left"}, "unknown field 'button'"),
        ({"action": "fill", "selector": "#a", "value": 3}, "'value': Input should be a valid str"),
        ({"action": "click", "selector": 5}, "'selector': Input should be a valid string"),
        ({"action": "click", "selector": ""}, "'selector': String should have at least 1"),
        ({"action": "click", "selector": "#a", "timeout_ms": "500"}, "'timeout_ms': Input should"),
        (
            {"action": "click", "selector": "#a", "timeout_ms": 0},
            "'timeout_ms': Input should be gr",
        ),
        ({"action": "click", "selector": "#a", "description": 1}, "'description': Input should"),
        ({"action": "goto"}, "step 1 (goto): missing 'url'"),
        ({"action": "press", "selector": "#a"}, "step 1 (press): missing 'key'"),
    ],
)
def test_wrong_fields_are_named(raw: Any, expected: str) -> None:
    [problem] = problems([raw])

    assert expected in problem


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)", "data:text/html,x"])
def test_goto_only_reaches_the_web(url: str) -> None:
    [problem] = problems([{"action": "goto", "url": url}])

    assert problem == "step 1 (goto): 'url': url must start with http:// or https://, or be a path"


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        ({}, "give exactly one of contains, equals, regex"),
        ({"contains": "a", "equals": "a"}, "give exactly one of contains, equals, regex"),
        ({"regex": "("}, "regex is not valid"),
    ],
)
def test_text_expectations_take_exactly_one_valid_matcher(
    matcher: dict[str, str], expected: str
) -> None:
    [problem] = problems([{"action": "expect_text", "selector": "#a", **matcher}])

    assert problem.startswith("step 1 (expect_text): ")
    assert expected in problem


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"state": "visible"}, "state visible needs a selector"),
        ({"selector": "#a", "state": "networkidle"}, "with a selector, state is one of"),
        ({"state": "ready"}, "'state': Input should be 'visible'"),
    ],
)
def test_wait_for_pairs_states_with_selectors(raw: dict[str, str], expected: str) -> None:
    [problem] = problems([{"action": "wait_for", **raw}])

    assert expected in problem


@pytest.mark.parametrize("name", ["../etc/x", "a/b", ".hidden", "", "x" * 81])
def test_screenshot_names_stay_inside_the_folder(name: str) -> None:
    [problem] = problems([{"action": "screenshot", "name": name}])

    assert problem.startswith("step 1 (screenshot): 'name': name holds 1-80 letters")


def test_every_bad_step_is_reported_at_once() -> None:
    raw = [{"action": "click"}, {"action": "goto", "url": "/"}, {"action": "nope"}]

    found = problems(raw)

    assert [p.split(":")[0] for p in found] == ["step 1 (click)", "step 3 (nope)"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"action": "goto", "url": "/"}, "steps must be a list of step objects"),
        ([], "a browser test needs at least one step"),
        ([{"action": "wait_for"}] * (steps.MAX_STEPS + 1), "at most 500 steps"),
    ],
)
def test_the_list_itself_is_checked(raw: Any, expected: str) -> None:
    [problem] = problems(raw)

    assert expected in problem


def test_step_error_is_a_value_error_with_a_joined_message() -> None:
    with pytest.raises(ValueError, match=r"^step 1 \(click\): missing 'selector'; step 2: "):
        steps.validate_steps([{"action": "click"}, {}])


def test_contains_matches_literally() -> None:
    [step] = steps.parse_steps([{"action": "expect_url", "contains": "a.b?c=1"}])

    assert isinstance(step, steps.ExpectUrl)
    pattern = step.pattern()
    assert isinstance(pattern, re.Pattern)
    assert pattern.search("http://x/a.b?c=1")
    assert not pattern.search("http://x/aXb?c=1")


def test_summary_names_the_target() -> None:
    parsed = steps.parse_steps(
        [
            {"action": "click", "selector": "#go"},
            {"action": "goto", "url": "/a"},
            {"action": "wait_for"},
        ]
    )

    assert [step.summary() for step in parsed] == ["click #go", "goto /a", "wait_for"]
