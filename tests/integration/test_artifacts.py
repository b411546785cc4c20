"""Where execution artifacts live, and how they are removed one by one or by age."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import make_settings
from testqueue import artifacts
from testqueue.config import Settings

DAY_S = 24 * 3600


@pytest.fixture
def artifact_settings(tmp_path: Path) -> Settings:
    return make_settings(f"sqlite:///{tmp_path / 't.db'}", tmp_path)


def make_execution(settings: Settings, execution_id: int, age_days: float) -> Path:
    folder = artifacts.execution_dir(settings, execution_id)
    folder.mkdir(parents=True)
    shot = folder / "step-01-failure.png"
    shot.write_bytes(b"\x89PNG\r\n\x1a\n")
    stamp = time.time() - age_days * DAY_S
    for path in (shot, folder):
        os.utime(path, (stamp, stamp))
    return folder


def test_execution_dir_is_under_the_artifacts_dir(artifact_settings: Settings) -> None:
    folder = artifacts.execution_dir(artifact_settings, 42)

    assert folder == artifact_settings.artifacts_dir / "executions" / "42"
    assert not folder.exists()


@pytest.mark.parametrize("bad", [-1, "1/../..", True, 1.5])
def test_execution_dir_refuses_what_is_not_an_id(artifact_settings: Settings, bad: object) -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        artifacts.execution_dir(artifact_settings, bad)  # type: ignore[arg-type]


def test_remove_one_execution(artifact_settings: Settings) -> None:
    kept = make_execution(artifact_settings, 1, age_days=0)
    gone = make_execution(artifact_settings, 2, age_days=0)

    assert artifacts.remove_execution_artifacts(artifact_settings, 2) is True
    assert artifacts.remove_execution_artifacts(artifact_settings, 2) is False
    assert kept.exists()
    assert not gone.exists()


def test_remove_older_than_keeps_young_and_foreign_folders(artifact_settings: Settings) -> None:
    old = make_execution(artifact_settings, 1, age_days=40)
    young = make_execution(artifact_settings, 2, age_days=1)
    rewritten = make_execution(artifact_settings, 3, age_days=40)
    (rewritten / "step-01-failure.png").write_bytes(b"\x89PNG")  # a file inside written now
    os.utime(rewritten, (time.time() - 40 * DAY_S,) * 2)  # while the folder itself looks old
    foreign = artifacts.executions_root(artifact_settings) / "notes"
    foreign.mkdir()
    os.utime(foreign, (0, 0))

    removed = artifacts.remove_older_than(artifact_settings, max_age_days=30)

    assert removed == 1
    assert not old.exists()
    assert young.exists()
    assert rewritten.exists()
    assert foreign.exists()


def test_zero_days_keeps_everything(artifact_settings: Settings) -> None:
    old = make_execution(artifact_settings, 1, age_days=400)

    assert artifacts.remove_older_than(artifact_settings, max_age_days=0) == 0
    assert old.exists()


def test_no_artifacts_yet(artifact_settings: Settings) -> None:
    assert artifacts.remove_older_than(artifact_settings, max_age_days=1) == 0
