"""The words testqueue is built from: statuses, results, priorities, bounds, moves, records.

This module imports nothing of testqueue's own, so every layer (models, queue,
runners, services, API, dashboard, CLI) takes these names from here and no
rule is written twice. Parsers here raise `ValueError` with a message for
people; each boundary turns that into its own kind of refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# -- lifecycle ---------------------------------------------------------------------------


class Status(StrEnum):
    PENDING = "pending"  # in the queue, waiting for a slot
    RUNNING = "running"  # claimed; its worker renews the lease
    COMPLETED = "completed"  # finished; `result` says how
    CANCELLED = "cancelled"  # withdrawn before or during the run
    EXPIRED = "expired"  # waited past its queue timeout; it never started


class Result(StrEnum):
    PASS = "pass"  # the test's own check passed
    FAIL = "fail"  # the test's own check failed (e.g. non-zero exit)
    ERROR = "error"  # it could not run: bad spec, runner crash, worker lost too often
    TIMEOUT = "timeout"  # killed at its deadline


class HistoryStatus(StrEnum):
    """A history filter: a status, or `failed` (completed with fail, error or timeout)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


FAILED_RESULTS = (Result.FAIL, Result.ERROR, Result.TIMEOUT)

# A test case (or a batch) may try a run again after these results, this many times.
MAX_RETRIES = 5
RETRYABLE_RESULTS = FAILED_RESULTS


class Verdict(StrEnum):
    """A batch's one word, once nothing in it waits or runs."""

    PASS = "pass"  # every execution passed (flaky ones included)
    FAIL = "fail"  # at least one failed
    ERROR = "error"  # none failed, at least one could not run
    TIMEOUT = "timeout"  # none failed or errored, at least one timed out
    EXPIRED = "expired"  # the rest passed, but some waited past their queue timeout
    CANCELLED = "cancelled"  # the rest passed, but some were cancelled


class BatchStatus(StrEnum):
    PENDING = "pending"  # something waits and nothing runs yet
    RUNNING = "running"  # something runs
    COMPLETED = "completed"  # everything ended
    CANCELLED = "cancelled"  # it was cancelled, and everything ended


class WebhookEvent(StrEnum):
    """What a webhook subscription can hear of; a run's event is its new status."""

    QUEUED = "execution.queued"
    STARTED = "execution.started"
    FINISHED = "execution.finished"
    EXPIRED = "execution.expired"
    CANCELLED = "execution.cancelled"
    BATCH_FINISHED = "batch.finished"
    PAUSED = "queue.paused"  # queue events: admins' subscriptions only
    RESUMED = "queue.resumed"


class DeliveryState(StrEnum):
    """Where a webhook delivery is: waiting to be sent (or sent again), or done."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # its retries ran out


class PayloadFormat(StrEnum):
    """What a webhook's body holds: the whole event, or one line for a chat tool."""

    JSON = "json"
    SLACK = "slack"


class TagMode(StrEnum):
    ANY = "any"  # a test case with any of the tags
    ALL = "all"  # a test case with all of the tags


def verdict_of(results: dict[str, int], cancelled: int, expired: int = 0) -> Verdict:
    """The verdict of finished executions: how many ended with each result, cancelled
    and expired."""
    for verdict in (Verdict.FAIL, Verdict.ERROR, Verdict.TIMEOUT):
        if results.get(verdict.value, 0):
            return verdict
    if expired:
        return Verdict.EXPIRED
    return Verdict.CANCELLED if cancelled else Verdict.PASS


# Every move an execution may make. `queue.moves` builds each UPDATE from this
# table, so a move that is not here cannot be written.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.CANCELLED, Status.EXPIRED}),
    # back to PENDING: recovery of a lost worker, or a clean hand-back at shutdown
    Status.RUNNING: frozenset({Status.COMPLETED, Status.CANCELLED, Status.PENDING}),
    Status.COMPLETED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.EXPIRED: frozenset(),
}
FINAL_STATUSES = frozenset(status for status, moves in TRANSITIONS.items() if not moves)


def may_move(source: Status, target: Status) -> bool:
    """Whether an execution in `source` may move to `target`."""
    return target in TRANSITIONS[source]


# Why an execution ended without a result, as it says in `error_message`.
CANCELLED_PENDING = "cancelled while pending"
CANCELLED_RUNNING = "cancelled while running"
CANCELLED_LOST = "cancelled; its worker stopped before it could confirm"
CANCELLED_BY_CLEAR = "removed when the queue was cleared"
CANCELLED_CASE_DELETED = "its test case was deleted"


def expired_message(waited_s: float, limit_s: float) -> str:
    """Why a run that waited past its queue timeout never started."""
    waited = f"{waited_s:.0f}" if waited_s >= 10 else f"{waited_s:.1f}"
    return f"waited {waited} s in the queue (limit {limit_s:g} s)"


# -- queue policies ----------------------------------------------------------------------


class FairShare(StrEnum):
    USER = "user"  # among runs of one effective priority, the user with fewest running first
    NONE = "none"  # strict order: priority, then queued_at, then id


MAX_CONCURRENCY_KEY_CHARS = 200
MAX_CONCURRENCY_LIMIT = 1000
MAX_QUEUE_TIMEOUT_S = 30 * 24 * 3600
# The fields of a run a concurrency key may name, as `{environment}`.
KEY_FIELDS = ("environment", "base_url", "browser", "test_case_id", "user_id")


def effective_priority(priority: int, waited_s: float, aging_s: float) -> int:
    """A pending run's priority raised one level per `aging_s` waited, never above the highest.

    `aging_s` 0 leaves it as requested.
    """
    if aging_s <= 0 or waited_s < aging_s:
        return priority
    return max(HIGHEST_PRIORITY, priority - int(waited_s // aging_s))


def check_key_template(template: str) -> str:
    """A concurrency key template as given, if every `{field}` in it is one of KEY_FIELDS.

    The queue fills the fields in from each run (`queue.enqueue`).
    """
    for name in re.findall(r"\{([^{}]*)\}", template):
        if name not in KEY_FIELDS:
            allowed = ", ".join("{" + f + "}" for f in KEY_FIELDS)
            raise ValueError(f"a concurrency key may use {allowed}, not {{{name}}}")
    return template


# -- accounts and test cases -------------------------------------------------------------


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class RunnerKind(StrEnum):
    COMMAND = "command"
    BROWSER = "browser"


class TestType(StrEnum):
    E2E = "e2e"
    API = "api"
    UNIT = "unit"
    INTEGRATION = "integration"


# -- priorities --------------------------------------------------------------------------

HIGHEST_PRIORITY = 1
LOWEST_PRIORITY = 10
DEFAULT_PRIORITY = 5


class PriorityWord(StrEnum):
    """A test case's priority, in words; a run takes the number it stands for."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


PRIORITY_WORDS: dict[str, int] = {
    PriorityWord.HIGH.value: HIGHEST_PRIORITY,
    PriorityWord.MEDIUM.value: DEFAULT_PRIORITY,
    PriorityWord.LOW.value: LOWEST_PRIORITY,
}
PRIORITY_HELP = (
    f"{HIGHEST_PRIORITY}..{LOWEST_PRIORITY} ({HIGHEST_PRIORITY} = highest) "
    f"or one of {', '.join(PRIORITY_WORDS)}"
)


def priority_word(priority: int) -> str | None:
    """The word a priority number stands for, if any (5 -> 'medium')."""
    for word, number in PRIORITY_WORDS.items():
        if number == priority:
            return word
    return None


def parse_priority(value: object, *, digits_in_text: bool = True) -> int:
    """A run's priority from a number or a word; `ValueError` says what is accepted.

    Form fields and command lines are text, so digits in text count there;
    JSON says what is a number, so the API passes `digits_in_text=False`.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON's 3.0 is the integer 3
    if isinstance(value, str):
        word = value.strip().lower()
        if word in PRIORITY_WORDS:
            return PRIORITY_WORDS[word]
        if not (digits_in_text and _WHOLE.fullmatch(word)):
            raise ValueError(f"priority must be {PRIORITY_HELP}")
        value = int(word)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"priority must be a number {PRIORITY_HELP}")
    if not HIGHEST_PRIORITY <= value <= LOWEST_PRIORITY:
        raise ValueError(f"priority {value} is out of range: it must be {PRIORITY_HELP}")
    return value


# -- numbers and bounds ------------------------------------------------------------------

# Ids held in INTEGER columns (test cases, users, artifacts) and in BIGINT ones
# (executions), and the largest OFFSET: past these a number cannot be bound to
# a query at all, so it is refused as input instead of failing in the database.
MAX_INT_ID = 2**31 - 1
MAX_BIGINT = 2**63 - 1
MAX_EXECUTION_ID = MAX_BIGINT
MAX_SLOTS = 1000

# ASCII digits only: str.isdigit() also takes superscripts, and int() the digits of
# other scripts.
_WHOLE = re.compile(r"-?[0-9]{1,19}")


def parse_whole(text: str, low: int, high: int, label: str = "the number") -> int:
    """A whole number written in ASCII digits within `low..high`; `ValueError` otherwise."""
    raw = text.strip()
    if not _WHOLE.fullmatch(raw) or not low <= int(raw) <= high:
        raise ValueError(f"{label} must be a whole number from {low} to {high}")
    return int(raw)


def parse_id(text: str, high: int = MAX_INT_ID) -> int | None:
    """A row id as given in a query or form field, or None when it is not one."""
    try:
        return parse_whole(text, 1, high)
    except ValueError:
        return None


# -- worker tags -------------------------------------------------------------------------

TAG_PATTERN = r"^[A-Za-z0-9_.:-]+$"
MAX_TAG_CHARS = 40
MAX_TAGS_CHARS = 500  # the fenced form fits a VARCHAR(500)


def encode_tags(tags: Iterable[str]) -> str:
    """Tags as stored, for executions and workers alike: sorted, lower case, comma-fenced
    (`,browser,linux,`), or '' for none."""
    clean = sorted({tag.strip().lower() for tag in tags if tag.strip()})
    return f",{','.join(clean)}," if clean else ""


def decode_tags(stored: str) -> list[str]:
    return [tag for tag in stored.split(",") if tag]


# -- what a runner reports ---------------------------------------------------------------


@dataclass(frozen=True)
class StepRecord:
    """What one step of a test did."""

    number: int
    action: str
    result: str  # pass | fail | error | skip
    description: str = ""
    duration_ms: float = 0.0
    error_message: str | None = None
    screenshot: str | None = None


@dataclass(frozen=True)
class ArtifactRecord:
    """A file a run left behind (a screenshot, a trace), under the artifacts folder."""

    kind: str  # screenshot | trace | file
    name: str
    path: Path
    content_type: str


@dataclass(frozen=True)
class Outcome:
    """How a run ended. `result` is None when the run was cancelled."""

    result: Result | None
    exit_code: int | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Progress:
    """What a run reported since it was last saved; None fields are unchanged."""

    execution_id: int
    attempt: int = 1
    log: str | None = None
    cut_bytes: int = 0
    steps: Sequence[StepRecord] | None = None
    artifacts: Sequence[ArtifactRecord] = ()
