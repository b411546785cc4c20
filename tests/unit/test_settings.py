"""Settings: defaults from the design, parsing from the environment, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from testqueue.config import Settings


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "MAX_CONCURRENT_EXECUTIONS", "QUEUE_CHECK_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url == "sqlite:///./testqueue.db"
    assert settings.max_concurrent_executions == 5
    assert settings.queue_check_interval == 2
    assert settings.execution_timeout == 300
    assert settings.max_attempts == 3
    assert settings.lease_ttl == 10
    assert settings.is_sqlite


def test_every_setting_is_documented_in_the_settings_page() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in page]
    assert missing == [], f"docs/settings.md does not describe {missing}"


def test_environment_names_are_the_seed_system_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("MAX_CONCURRENT_EXECUTIONS", "7")
    monkeypatch.setenv("EXECUTION_TIMEOUT", "12.5")
    monkeypatch.setenv("WORKER_TAGS", "linux, browser,,linux")
    monkeypatch.setenv("WORKER_CONCURRENCY", "3")
    settings = Settings(_env_file=None)
    assert not settings.is_sqlite
    assert settings.max_concurrent_executions == 7
    assert settings.execution_timeout == 12.5
    assert settings.worker_tags == ["browser", "linux"]
    assert settings.worker_capacity == 3


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_CONCURRENT_EXECUTIONS", raising=False)
    env = tmp_path / ".env"
    env.write_text("MAX_CONCURRENT_EXECUTIONS=9\n")
    assert Settings(_env_file=env).max_concurrent_executions == 9


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CONCURRENT_EXECUTIONS", "0"),
        ("MAX_CONCURRENT_EXECUTIONS", "lots"),
        ("QUEUE_CHECK_INTERVAL", "-1"),
        ("DATABASE_URL", "mysql://x"),
        ("LOG_FORMAT", "xml"),
        ("SQLITE_SYNCHRONOUS", "OFF"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert name.lower() in str(caught.value)
