"""Where the files of an execution live: screenshots, traces, anything a runner keeps.

Each execution owns one folder, `ARTIFACTS_DIR/executions/<execution id>/`, so
removing an execution's files is one `rmtree` and age-based clean-up never has
to read the database: a folder's age is the newest modification time in it.
Everything here is plain filesystem work and quick enough to call from the
event loop for one execution; callers sweeping a large tree can hand
`remove_older_than` to `asyncio.to_thread`.

Where the database keeps artifacts (`ARTIFACT_STORE`, see
`testqueue.queue.artifact_store`) the folder is only where a runner writes a
file before its worker moves it into the database; the worker deletes its copy
once stored, and hosts that share no disk serve it from there.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from testqueue.config import Settings

log = logging.getLogger(__name__)

EXECUTIONS_FOLDER = "executions"
SECONDS_PER_DAY = 24 * 3600


def executions_root(settings: Settings) -> Path:
    """The folder that holds one sub-folder per execution."""
    return Path(settings.artifacts_dir) / EXECUTIONS_FOLDER


def execution_dir(settings: Settings, execution_id: int) -> Path:
    """The folder of one execution's artifacts (not created here)."""
    # An int keeps a crafted id from naming a path outside the artifacts folder.
    if isinstance(execution_id, bool) or not isinstance(execution_id, int) or execution_id < 0:
        raise ValueError(f"execution id must be a non-negative int, not {execution_id!r}")
    return executions_root(settings) / str(execution_id)


def remove_execution_artifacts(settings: Settings, execution_id: int) -> bool:
    """Delete every file of one execution; False when it had none."""
    folder = execution_dir(settings, execution_id)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    log.info("artifacts removed", extra={"execution_id": execution_id})
    return True


def remove_older_than(settings: Settings, max_age_days: float, *, now: float | None = None) -> int:
    """Delete execution folders untouched for more than `max_age_days`; return how many.

    `max_age_days` of 0 or less keeps everything, which is how `ARTIFACT_MAX_AGE_DAYS=0`
    turns clean-up off. Folders whose name is not an execution id are left alone.
    """
    root = executions_root(settings)
    if max_age_days <= 0 or not root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - max_age_days * SECONDS_PER_DAY
    removed = 0
    for folder in root.iterdir():
        if not (folder.is_dir() and folder.name.isdigit()):
            continue
        if _last_modified(folder) < cutoff:
            # A run may delete or rewrite its own files meanwhile; a vanished file is fine.
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("old artifacts removed", extra={"count": removed, "max_age_days": max_age_days})
    return removed


def _last_modified(folder: Path) -> float:
    """The newest mtime of the folder and its files: a run that is still writing is young."""
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except FileNotFoundError:
            continue
    return newest
