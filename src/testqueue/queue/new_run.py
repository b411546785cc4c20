"""A new run, described once: how every column of a queued execution is made from the
request and its test case, as one INSERT ... SELECT for one run or for a list.

Priority and base URL default to the test case's; retries and the results they
follow are the request's, else the test case's; the concurrency key is the test
case's template filled in from the run; the queue timeout is the request's, else
the test case's, else QUEUE_TIMEOUT; a run queued with dedupe is not inserted
when its twin (same test case, environment and base URL) waits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal_column,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from testqueue.models import Execution, TestCase
from testqueue.queue import dialect
from testqueue.queue.moves import in_status
from testqueue.vocabulary import (
    DEFAULT_PRIORITY,
    KEY_FIELDS,
    MAX_CONCURRENCY_KEY_CHARS,
    PRIORITY_WORDS,
    Status,
)

E = Execution


# Every new run starts so; the rest comes from the request and its test case.
NEW_RUN: dict[str, Any] = {
    "status": Status.PENDING.value,
    "attempt": 1,
    "cancel_requested": False,
    "total_steps": 0,
    "passed_steps": 0,
    "failed_steps": 0,
    "skipped_steps": 0,
    "retried": 0,
    "flaky": False,
}
# Taken from the request as given.
GIVEN = ("user_id", "browser", "environment", "triggered_by", "batch_id")


def _run_priority(asked: Any) -> Any:
    """A new run's priority: the one asked for, else its test case's."""
    words = {_inline(word): _inline(number) for word, number in PRIORITY_WORDS.items()}
    return func.coalesce(
        asked, case(words, value=TestCase.priority, else_=_inline(DEFAULT_PRIORITY))
    )


def _inline(value: bool | int | str, type_: Any = None) -> Any:
    """A constant written into the compiled statement, not sent as a parameter: a run call
    then sends few enough parameters for psycopg to keep the statement's parsed form."""
    if isinstance(value, bool):
        return true() if value else false()
    if isinstance(value, int):
        return literal_column(str(int(value)), type_ or Integer)
    return literal_column("'" + value.replace("'", "''") + "'", type_ or String)


def base_url() -> Any:
    """The base URL asked for, else the test case's `test_data.base_url`."""
    return func.coalesce(
        bindparam("base_url", type_=E.base_url.type),
        TestCase.test_data["base_url"].as_string(),
    )


def _concurrency_key() -> Any:
    """The test case's key template with each `{field}` (vocabulary.KEY_FIELDS) filled in."""
    fields: dict[str, Any] = {
        "environment": bindparam("environment", type_=E.environment.type),
        "base_url": base_url(),
        "browser": bindparam("browser", type_=E.browser.type),
        "test_case_id": cast(TestCase.id, String),
        "user_id": cast(bindparam("user_id", type_=Integer), String),
    }
    assert set(fields) == set(KEY_FIELDS)
    key: Any = TestCase.concurrency_key
    for name, value in fields.items():
        key = func.replace(key, "{" + name + "}", func.coalesce(value, ""))
    return func.substr(key, 1, MAX_CONCURRENCY_KEY_CHARS)


def _queue_timeout() -> Any:
    """Seconds a run may wait: the request's, else its test case's, else QUEUE_TIMEOUT; 0 = none."""
    chosen = func.coalesce(
        bindparam("queue_timeout", type_=Float),
        TestCase.queue_timeout_seconds,
        bindparam("default_queue_timeout", type_=Float),
    )
    return func.nullif(chosen, 0.0)


def _dedupes() -> Any:
    """Whether this run is queued with dedupe: the request says so, else its test case."""
    return func.coalesce(bindparam("dedupe", type_=Boolean), TestCase.dedupe).is_(True)


def _dedupe_key() -> Any:
    """What two runs share when one would repeat the other: test case, environment, URL."""
    env = func.coalesce(bindparam("environment", type_=E.environment.type), "")
    text_of = cast(TestCase.id, String) + "|" + env + "|" + func.coalesce(base_url(), "")
    return func.substr(text_of, 1, 1000)


def _pending_twin() -> Any:
    """A pending run of the same test case, environment and base URL as this new one."""
    twin = aliased(E)
    return (
        select(twin.id)
        .where(
            in_status(Status.PENDING, twin),
            twin.test_case_id == TestCase.id,
            twin.environment.is_not_distinct_from(
                bindparam("environment", type_=E.environment.type)
            ),
            twin.base_url.is_not_distinct_from(base_url()),
        )
        .exists()
    )


def _run_values(asked_priority: Any) -> dict[Any, Any]:
    """Every column of a new run, as SQL over its row of test_cases and the request's params.

    Retries and the results they follow are the request's, else the test case's;
    the concurrency key and its limit are the test case's.
    """
    columns = E.__table__.c
    values: dict[Any, Any] = {
        columns[name]: _inline(value, columns[name].type) for name, value in NEW_RUN.items()
    }
    values.update({columns[name]: bindparam(name, type_=columns[name].type) for name in GIVEN})
    values.update(
        {
            E.test_case_id: TestCase.id,
            E.priority: _run_priority(asked_priority),
            E.queued_at: bindparam("now", type_=E.queued_at.type),
            E.required_tags: TestCase.required_tags,
            E.base_url: base_url(),
            E.concurrency_key: _concurrency_key(),
            E.concurrency_limit: TestCase.concurrency_limit,
            E.queue_timeout_s: _queue_timeout(),
            E.dedupe_key: case((_dedupes(), _dedupe_key()), else_=None),
            E.retries: func.coalesce(bindparam("retries", type_=Integer), TestCase.retries),
            E.retry_on: func.coalesce(
                bindparam("retry_on", type_=E.retry_on.type), TestCase.retry_on
            ),
        }
    )
    return values


def _insert(values: dict[Any, Any], source: Any, dialect_name: str) -> Any:
    """The INSERT ... SELECT; a dedupe run whose twin is pending is not inserted (the
    partial unique index on `dedupe_key` settles two such requests at once)."""
    make = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return (
        make(E)
        .from_select([column.key for column in values], source)
        .on_conflict_do_nothing(
            index_elements=[E.dedupe_key],
            index_where=and_(in_status(Status.PENDING), E.dedupe_key.is_not(None)),
        )
        .returning(E.id, E.test_case_id, E.priority, E.queue_timeout_s)
    )


def _one_run_insert(dialect_name: str) -> Any:
    """INSERT INTO executions SELECT <a new run> FROM test_cases WHERE id = :case_id."""
    values = _run_values(bindparam("priority", type_=Integer))
    source = select(*values.values()).where(
        TestCase.id == bindparam("case_id"),
        TestCase.archived_at.is_(None),
        ~and_(_dedupes(), _pending_twin()),
    )
    return _insert(values, source, dialect_name)


def _many_runs_insert(listed: Any, dialect_name: str) -> Any:
    """INSERT INTO executions SELECT <a new run> FROM <the list> JOIN test_cases ORDER BY n.

    One statement whatever the number of runs: the list goes to the database
    as one parameter (`Dialect.numbered`), not as a thousand rows of them.
    """
    values = _run_values(listed.c.priority)
    source = (
        select(*values.values())
        .select_from(listed.join(TestCase, TestCase.id == listed.c.case_id))
        .where(TestCase.archived_at.is_(None))
        .order_by(listed.c.n)
    )
    return _insert(values, source, dialect_name)


_DIALECTS = (dialect.SQLITE, dialect.POSTGRES)
INSERT_ONE = {d.name: _one_run_insert(d.name) for d in _DIALECTS}
INSERT_MANY = {d.name: _many_runs_insert(d.numbered(), d.name) for d in _DIALECTS}
