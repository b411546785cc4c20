"""The OpenAPI document and the answers agree: Schemathesis, every check, both databases.

A real `testqueue serve` per database; every operation gets a bounded number
of generated requests, valid and invalid, authorised by an admin's personal
access token (which no generated request can end: the admin stays the last
active admin, and the token's own id is never revoked).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok
from sqlalchemy.engine import make_url

from conftest import POSTGRES_URL
from process import Server
from testqueue.queue.postgres import libpq_dsn

EXAMPLES = 12
# Browser steps follow a step language of their own (docs/browser.md), checked
# when a test case is saved, with rules across fields that the schema cannot
# state: there a schema-valid body may get a 422 that names the bad step.
BROWSER_STEPS_CHECKED = {("POST", "/api/v1/tests"), ("PUT", "/api/v1/tests/{test_case_id}")}
# A webhook's URL must name a public address (docs/webhooks.md, "Safety"): a rule on
# what the host is, which no pattern states; a 422 then says what is wrong with the URL.
WEBHOOK_URLS_CHECKED = {("POST", "/api/v1/webhooks"), ("PUT", "/api/v1/webhooks/{webhook_id}")}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp(f"contract-{request.param}")
    if request.param == "sqlite":
        server = Server(folder, f"sqlite:///{folder / 'q.db'}", "--no-worker").start()
        yield server
        server.stop()
        return
    name = f"testqueue_contract_{os.getpid()}"
    admin = libpq_dsn(make_url(POSTGRES_URL).set(database="postgres").render_as_string(False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    server = Server(folder, url, "--no-worker").start()
    yield server
    server.stop()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def token(served: Server) -> dict[str, Any]:
    made = served.call("POST", "/users/me/tokens", json={"name": "contract"})
    served.call("POST", "/tests", json={"title": "seed", "command": ["true"]})
    return {"header": {"Authorization": f"Bearer {made['token']}"}, "id": made["id"]}


def test_the_api_keeps_its_own_contract(served: Server, token: dict[str, Any]) -> None:
    api_schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    failures: dict[str, str] = {}
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok() if isinstance(result, Ok) else pytest.fail(str(result.err()))
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, served.base_url, token)
            except Unsatisfiable:
                continue  # nothing to vary the other way (no parameters, no body)
            except BaseException as exc:  # every operation runs; all failures are reported
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:2000]
    assert operations >= 30
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, token: dict[str, Any]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def check(case: Any) -> None:
        if case.path_parameters and case.path_parameters.get("token_id") == token["id"]:
            case.path_parameters["token_id"] = token["id"] + 1
        if (case.method, case.path) not in BROWSER_STEPS_CHECKED | WEBHOOK_URLS_CHECKED:
            case.call_and_validate(base_url=base_url, headers=token["header"])
            return
        response = case.call(base_url=base_url, headers=token["header"])
        case.validate_response(response, excluded_checks=[checks.positive_data_acceptance])
        if response.status_code == 422 and mode == GenerationMode.POSITIVE:
            names = "step" if (case.method, case.path) in BROWSER_STEPS_CHECKED else "url"
            assert names in response.text.lower(), response.text

    check()
