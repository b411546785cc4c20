"""The step language of browser tests: what each step says and what it does to a page.

A browser test case is a list of JSON objects, each with an `action` and that
action's arguments (`docs/browser.md` lists them). The API checks them with
`validate_steps` when a test case is saved, so a typo is a 422 naming the step
instead of an execution that errors minutes later; the runner parses them again
with `parse_steps` because rows saved before a rule changed still reach it.

Each model performs itself against a Playwright page. Only the `expect_*`
steps use Playwright's assertions, so only they raise `AssertionError`; the
runner counts that as `fail` and any Playwright error as `error`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Protocol, cast, get_args
from urllib.parse import urljoin, urlsplit

from playwright.async_api import Page, expect
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

DEFAULT_STEP_TIMEOUT_MS = 10_000
MAX_STEP_TIMEOUT_MS = 10 * 60 * 1000
MAX_STEPS = 500

ElementState = Literal["visible", "hidden", "attached", "detached"]
LoadState = Literal["load", "domcontentloaded", "networkidle"]
WaitState = Literal[ElementState, LoadState]
ELEMENT_STATES: tuple[ElementState, ...] = get_args(ElementState)
LOAD_STATES: tuple[LoadState, ...] = get_args(LoadState)

Selector = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
SHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


class StepError(ValueError):
    """The steps of a browser test are not valid; the message names each bad step."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class StepContext(Protocol):
    """What a step needs from the run it belongs to."""

    base_url: str | None

    async def take_screenshot(self, name: str, *, full_page: bool) -> None: ...


class _Step(BaseModel):
    """Fields every step may carry."""

    # Strict: "5000" is not a timeout and 3 is not a selector; say so at save time.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    description: str | None = None
    timeout_ms: int | None = Field(default=None, gt=0, le=MAX_STEP_TIMEOUT_MS)

    action: str

    @property
    def wait_ms(self) -> float:
        return float(self.timeout_ms or DEFAULT_STEP_TIMEOUT_MS)

    def summary(self) -> str:
        """A short label for logs: the action and its target."""
        target = getattr(self, "selector", None) or getattr(self, "url", None)
        return f"{self.action} {target}" if target else self.action

    async def perform(self, page: Page, ctx: StepContext) -> None:
        raise NotImplementedError


class _Matcher(_Step):
    """A step that compares text with exactly one of contains / equals / regex."""

    contains: str | None = None
    equals: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_matcher(self) -> _Matcher:
        given = [v for v in (self.contains, self.equals, self.regex) if v is not None]
        if len(given) != 1:
            raise PydanticCustomError("matcher", "give exactly one of contains, equals, regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                message = "regex is not valid: {err}"
                raise PydanticCustomError("regex", message, {"err": str(exc)}) from None
        return self

    def pattern(self) -> str | re.Pattern[str]:
        """What Playwright should match: the exact text, or a regular expression."""
        if self.equals is not None:
            return self.equals
        if self.contains is not None:
            return re.compile(re.escape(self.contains))
        return re.compile(self.regex or "")


class Goto(_Step):
    action: Literal["goto"]
    url: Annotated[str, StringConstraints(min_length=1, max_length=8000)]
    wait_until: Literal["load", "domcontentloaded", "networkidle", "commit"] = "load"

    @field_validator("url")
    @classmethod
    def _web_url(cls, url: str) -> str:
        # file:, data: and javascript: would let any member read the worker's disk or
        # run script outside a page; a test only ever needs http(s) or a path.
        scheme = urlsplit(url).scheme
        if scheme and scheme not in ("http", "https") and url != "about:blank":
            raise PydanticCustomError(
                "url", "url must start with http:// or https://, or be a path"
            )
        return url

    async def perform(self, page: Page, ctx: StepContext) -> None:
        if urlsplit(self.url).scheme:
            target = self.url
        elif ctx.base_url:
            target = urljoin(ctx.base_url, self.url)
        else:
            raise StepError(
                [f"relative url {self.url!r} needs a base_url (run option or test_data)"]
            )
        await page.goto(target, wait_until=self.wait_until, timeout=self.wait_ms)


class Click(_Step):
    action: Literal["click"]
    selector: Selector

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await page.locator(self.selector).click(timeout=self.wait_ms)


class Fill(_Step):
    action: Literal["fill"]
    selector: Selector
    value: str

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await page.locator(self.selector).fill(self.value, timeout=self.wait_ms)


class Press(_Step):
    action: Literal["press"]
    selector: Selector
    key: Annotated[str, StringConstraints(min_length=1, max_length=100)]

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await page.locator(self.selector).press(self.key, timeout=self.wait_ms)


class Select(_Step):
    action: Literal["select"]
    selector: Selector
    value: str | list[str]

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await page.locator(self.selector).select_option(self.value, timeout=self.wait_ms)


class Check(_Step):
    action: Literal["check"]
    selector: Selector

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await page.locator(self.selector).check(timeout=self.wait_ms)


class Uncheck(_Step):
    action: Literal["uncheck"]
    selector: Selector

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await page.locator(self.selector).uncheck(timeout=self.wait_ms)


class Hover(_Step):
    action: Literal["hover"]
    selector: Selector

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await page.locator(self.selector).hover(timeout=self.wait_ms)


class WaitFor(_Step):
    action: Literal["wait_for"]
    selector: Selector | None = None
    state: WaitState | None = None

    @model_validator(mode="after")
    def _state_fits(self) -> WaitFor:
        if self.selector is not None and self.state in LOAD_STATES:
            raise PydanticCustomError(
                "state", "with a selector, state is one of " + "/".join(ELEMENT_STATES)
            )
        if self.selector is None and self.state in ELEMENT_STATES:
            raise PydanticCustomError(
                "state", "state {state} needs a selector", {"state": self.state}
            )
        return self

    async def perform(self, page: Page, ctx: StepContext) -> None:
        # The validator paired the state with the selector; cast only tells mypy so.
        if self.selector is None:
            load = cast(LoadState, self.state or "load")
            await page.wait_for_load_state(load, timeout=self.wait_ms)
        else:
            # Not a locator: a wait must not fail only because the selector matches twice.
            element = cast(ElementState, self.state or "visible")
            await page.wait_for_selector(self.selector, state=element, timeout=self.wait_ms)


class ExpectVisible(_Step):
    action: Literal["expect_visible"]
    selector: Selector

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await expect(page.locator(self.selector)).to_be_visible(timeout=self.wait_ms)


class ExpectHidden(_Step):
    action: Literal["expect_hidden"]
    selector: Selector

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await expect(page.locator(self.selector)).to_be_hidden(timeout=self.wait_ms)


class ExpectText(_Matcher):
    action: Literal["expect_text"]
    selector: Selector

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await expect(page.locator(self.selector)).to_have_text(self.pattern(), timeout=self.wait_ms)


class ExpectUrl(_Matcher):
    action: Literal["expect_url"]

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await expect(page).to_have_url(self.pattern(), timeout=self.wait_ms)


class ExpectTitle(_Matcher):
    action: Literal["expect_title"]

    async def perform(self, page: Page, ctx: StepContext) -> None:
        await expect(page).to_have_title(self.pattern(), timeout=self.wait_ms)


class Screenshot(_Step):
    action: Literal["screenshot"]
    name: str | None = None
    full_page: bool = False

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        # The name becomes a file name in the execution's folder: no paths, no dot files.
        if not SHOT_NAME.fullmatch(name):
            raise PydanticCustomError(
                "name",
                "name holds 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        return name

    async def perform(self, page: Page, ctx: StepContext) -> None:
        name = (self.name or "screenshot").removesuffix(".png")
        await ctx.take_screenshot(name, full_page=self.full_page)


Step = Annotated[
    Goto
    | Click
    | Fill
    | Press
    | Select
    | Check
    | Uncheck
    | Hover
    | WaitFor
    | ExpectVisible
    | ExpectHidden
    | ExpectText
    | ExpectUrl
    | ExpectTitle
    | Screenshot,
    Field(discriminator="action"),
]
_STEP: TypeAdapter[Step] = TypeAdapter(Step)
ACTIONS: tuple[str, ...] = (
    "goto",
    "click",
    "fill",
    "press",
    "select",
    "check",
    "uncheck",
    "hover",
    "wait_for",
    "expect_visible",
    "expect_hidden",
    "expect_text",
    "expect_url",
    "expect_title",
    "screenshot",
)


def parse_steps(steps: Any) -> list[Step]:
    """The steps as models; `StepError` names every step that is wrong and why."""
    if not isinstance(steps, list):
        raise StepError(["steps must be a list of step objects"])
    if not steps:
        raise StepError(["a browser test needs at least one step"])
    if len(steps) > MAX_STEPS:
        raise StepError([f"a browser test has at most {MAX_STEPS} steps, not {len(steps)}"])
    parsed: list[Step] = []
    problems: list[str] = []
    for number, raw in enumerate(steps, start=1):
        try:
            parsed.append(_STEP.validate_python(raw))
        except ValidationError as exc:
            label = _label(number, raw)
            # A union field fails once per member; one line per field is enough.
            for problem in dict.fromkeys(_describe(err) for err in exc.errors()):
                problems.append(f"{label}: {problem}")
    if problems:
        raise StepError(problems)
    return parsed


def validate_steps(steps: list[Any]) -> list[dict[str, Any]]:
    """Check browser steps before a test case is saved; return them in canonical form.

    Raises `StepError` (a `ValueError`) whose message names each bad step, 1-based,
    e.g. "step 3 (click): missing 'selector'", for the API to answer with a 422.
    """
    return [
        {"action": step.action} | step.model_dump(exclude_none=True, exclude_defaults=True)
        for step in parse_steps(steps)
    ]


def _label(number: int, raw: object) -> str:
    action = raw.get("action") if isinstance(raw, dict) else None
    return f"step {number} ({action})" if isinstance(action, str) and action else f"step {number}"


def _describe(err: ErrorDetails) -> str:
    """One pydantic error as a person would say it."""
    kind = err["type"]
    field = str(err["loc"][1]) if len(err["loc"]) > 1 else ""
    if kind == "union_tag_invalid":
        action = err["input"].get("action")
        if not isinstance(action, str):
            return "'action' must be a string"
        return f"unknown action {action!r}; known: {', '.join(ACTIONS)}"
    if kind == "union_tag_not_found":
        return "missing 'action'"
    if kind == "model_attributes_type":
        return "a step must be an object with an 'action'"
    if kind == "missing":
        return f"missing {field!r}"
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    return f"{field!r}: {err['msg']}" if field else err["msg"]
