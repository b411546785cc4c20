"""Shared fixtures: one suite, both databases, real processes.

`database_url` runs a test once on a fresh SQLite file (a copy of a migrated
one) and once on the session's PostgreSQL database with every table emptied. PostgreSQL must answer
at TEST_POSTGRES_URL (default postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test):
the suite fails rather than skips without it, so CI cannot pass on SQLite alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from argon2 import PasswordHasher
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url

from gates import GateRunner, with_gate
from testqueue import queue
from testqueue.app import create_app
from testqueue.config import Settings
from testqueue.database import migrate
from testqueue.models import Base
from testqueue.queue.postgres import libpq_dsn
from testqueue.runners import Registry
from testqueue.runners.base import RunSpec
from testqueue.vocabulary import FairShare, Result

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test"
)
ADMIN_PASSWORD = "admin-password-1"
SESSION_DB = f"testqueue_test_{os.getpid()}"


def cheap_hasher() -> PasswordHasher:
    """Argon2id still, at a test's cost: hashing was most of the time spent making accounts."""
    return PasswordHasher(time_cost=1, memory_cost=1024)


def _admin_dsn(dbname: str = "postgres") -> str:
    return libpq_dsn(_postgres_url(dbname))


def _postgres_url(dbname: str) -> str:
    return make_url(POSTGRES_URL).set(database=dbname).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A migrated database of this test session; each test starts from empty tables."""
    try:
        conn = psycopg.connect(_admin_dsn(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not answering at {POSTGRES_URL} ({exc}); start it "
            "(see .ci/run) or point TEST_POSTGRES_URL at one"
        )
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SESSION_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{SESSION_DB}"')
    migrate(Settings(database_url=_postgres_url(SESSION_DB)))
    yield SESSION_DB
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SESSION_DB}" WITH (FORCE)')


def _empty_postgres(dbname: str) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with psycopg.connect(_admin_dsn(dbname), autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        conn.execute("INSERT INTO queue_state (id, paused, updated_at) VALUES (1, false, now())")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each SQLite test copies."""
    path = tmp_path_factory.mktemp("template") / "testqueue.db"
    migrate(Settings(database_url=f"sqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "testqueue.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    name = request.getfixturevalue("postgres_database")
    _empty_postgres(name)
    yield _postgres_url(name)


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: fast heartbeats, its own folders, a known admin password."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "artifacts_dir": tmp_path / "artifacts",
        "work_dir": tmp_path,
        "heartbeat_interval": 0.2,
        "lease_ttl": 5.0,
        "queue_check_interval": 2.0,
        "shutdown_grace": 1.0,
        "testqueue_admin_password": ADMIN_PASSWORD,
        "secret_key": "test-secret-key-that-is-long-enough-0123456789",
        "log_format": "text",
        # Schedules in tests tick every second or two (cron's sixth field).
        "schedule_min_interval": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
def gate() -> GateRunner:
    """The `gate` runner kind: runs that hold their slot until the test releases them."""
    return GateRunner()


@pytest.fixture
def registry(settings: Settings, gate: GateRunner) -> Registry:
    return with_gate(Registry(settings), gate)


class Api:
    """An httpx client on the app, signed in as admin, that makes members on request."""

    def __init__(self, client: AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app
        self.admin = {"Authorization": f"Bearer {self._no_token}"}

    _no_token = ""

    @property
    def state(self) -> Any:
        return self.app.state.testqueue

    async def login(self, username: str, password: str) -> dict[str, str]:
        response = await self.client.post(
            "/api/v1/auth/login", data={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def member(self, username: str = "member") -> dict[str, str]:
        password = f"{username}-password"
        response = await self.client.post(
            "/api/v1/users",
            json={"username": username, "password": password, "role": "member"},
            headers=self.admin,
        )
        assert response.status_code == 201, response.text
        return await self.login(username, password)

    async def gate_test(self, title: str = "gated", **fields: Any) -> int:
        """A test case of the `gate` runner kind (see `gates.py`)."""
        body = {"title": title, "runner": "gate", **fields}
        response = await self.client.post("/api/v1/tests", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def command_test(self, argv: list[str], **fields: Any) -> int:
        body = {"title": fields.pop("title", "a command test"), "command": argv, **fields}
        response = await self.client.post("/api/v1/tests", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def run(
        self, test_case_id: int, headers: dict[str, str] | None = None, **body: Any
    ) -> Any:
        response = await self.client.post(
            f"/api/v1/executions/tests/{test_case_id}/run",
            json=body or None,
            headers=headers or self.admin,
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        response = await self.client.get(f"/api/v1{path}", headers=headers or self.admin)
        assert response.status_code == 200, response.text
        return response.json()

    async def dashboard_sign_in(
        self, username: str, password: str, client: AsyncClient | None = None
    ) -> Any:
        """The dashboard's answer to its sign-in form, filled in as a browser would."""
        if client is None:
            async with AsyncClient(
                transport=ASGITransport(app=self.app), base_url="http://testqueue"
            ) as fresh:
                return await self.dashboard_sign_in(username, password, fresh)
        form = await client.get("/signin")
        nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert nonce is not None, form.text
        fields = {"username": username, "password": password, "csrf": nonce[1]}
        return await client.post("/signin", data=fields)

    @contextlib.asynccontextmanager
    async def dashboard(
        self, username: str = "admin", password: str = ADMIN_PASSWORD
    ) -> AsyncIterator[Browser]:
        """A client of the dashboard on this app, signed in with a session cookie."""
        transport = ASGITransport(app=self.app)
        async with AsyncClient(transport=transport, base_url="http://testqueue") as client:
            signed_in = await self.dashboard_sign_in(username, password, client)
            assert signed_in.status_code == 303, signed_in.text
            page = await client.get("/tests")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None, page.text
            yield Browser(client, csrf[1])


@dataclass(frozen=True)
class Browser:
    """A signed-in dashboard client and the CSRF token its forms carry."""

    client: AsyncClient
    csrf: str

    async def post(self, path: str, **fields: str) -> Any:
        return await self.client.post(path, data={"csrf": self.csrf, **fields})


async def start_api(
    settings: Settings, registry: Registry, *, with_worker: bool
) -> AsyncIterator[Api]:
    app = create_app(settings, registry=registry, with_worker=with_worker, hasher=cheap_hasher())
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testqueue") as client:
            api = Api(client, app)
            api.admin = await api.login("admin", ADMIN_PASSWORD)
            yield api


@pytest.fixture
async def api(settings: Settings, registry: Registry) -> AsyncIterator[Api]:
    """The app with its dispatcher running, as `testqueue serve` has it."""
    async for value in start_api(settings, registry, with_worker=True):
        yield value


@pytest.fixture
async def api_only(settings: Settings, registry: Registry) -> AsyncIterator[Api]:
    """The app without a dispatcher: nothing starts, so the line stays still."""
    async for value in start_api(settings, registry, with_worker=False):
        yield value


def spec_for(argv: list[str] | None, **fields: Any) -> RunSpec:
    values: dict[str, Any] = {
        "execution_id": 1,
        "test_case_id": 1,
        "runner": "command",
        "attempt": 1,
        "timeout_s": 30.0,
        "command": argv,
        "worker_id": "test-worker",
    }
    values.update(fields)
    return RunSpec(**values)


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """For tests of what only PostgreSQL does (several hosts): the session database, emptied."""
    _empty_postgres(postgres_database)
    return _postgres_url(postgres_database)


# A worker the test drives by hand: runs move to running and completed exactly
# when the test says (`queue.settle` with its own claimer), in strict line order.
STAND_IN = queue.Claimer(
    worker_id="stand-in",
    default_slots=50,
    lease_ttl_s=60.0,
    capacity=50,
    policies=queue.Policies(fair_share=FairShare.NONE),
)


async def claim(api: Any, count: int) -> list[queue.Claimed]:
    """Take the next `count` runs in line, as a worker would."""
    return await queue.settle(api.state.db, STAND_IN, [], count)


async def finish(api: Any, claimed: queue.Claimed, result: Result, **fields: Any) -> None:
    """Record how a claimed run ended, as its worker would."""
    done = claimed.ended(
        result,
        fields.get("exit_code"),
        fields.get("error_message"),
        fields.get("steps", (0, 0, 0, 0)),
        fields.get("progress"),
    )
    done = replace(done, retry=fields.get("retry", False))
    await queue.settle(api.state.db, STAND_IN, [done], 0)
