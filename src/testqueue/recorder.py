"""What one run reports, kept in memory until the dispatcher saves it.

The log is capped at LOG_MAX_BYTES: the first quarter and the last three
quarters are kept, and the text says how much was cut between them.
"""

from __future__ import annotations

from testqueue.vocabulary import ArtifactRecord, Progress, StepRecord


class RunRecord:
    """A `Reporter` for one execution."""

    def __init__(self, execution_id: int, max_log_bytes: int, attempt: int = 1) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self._head_limit = max_log_bytes // 4
        self._tail_limit = max_log_bytes - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self._cut = 0
        self._steps: list[StepRecord] = []
        self._new_artifacts: list[ArtifactRecord] = []
        self._log_dirty = False
        self._steps_dirty = False

    def log(self, text: str) -> None:
        data = text.encode()
        self._log_dirty = True
        room = self._head_limit - len(self._head)
        if room > 0 and not self._tail:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        self._tail += data
        excess = len(self._tail) - self._tail_limit
        if excess > 0:
            del self._tail[:excess]
            self._cut += excess

    def step(self, step: StepRecord) -> None:
        self._steps.append(step)
        self._steps_dirty = True

    def artifact(self, artifact: ArtifactRecord) -> None:
        self._new_artifacts.append(artifact)

    def text(self) -> str:
        """The log as stored: head, a line saying what was cut, tail."""
        head = self._head.decode(errors="replace")
        if not self._cut:
            return head + self._tail.decode(errors="replace")
        tail = self._tail.decode(errors="replace")
        return f"{head}\n[... {self._cut} bytes of output cut ...]\n{tail}"

    def step_counts(self) -> tuple[int, int, int, int]:
        """Total, passed, failed (fail or error) and skipped steps."""
        results = [step.result for step in self._steps]
        passed = results.count("pass")
        skipped = results.count("skip")
        return len(results), passed, len(results) - passed - skipped, skipped

    def take_progress(self) -> Progress | None:
        """What changed since the last call, or None if nothing did."""
        if not (self._log_dirty or self._steps_dirty or self._new_artifacts):
            return None
        progress = Progress(
            execution_id=self.execution_id,
            attempt=self.attempt,
            log=self.text() if self._log_dirty else None,
            cut_bytes=self._cut,
            steps=list(self._steps) if self._steps_dirty else None,
            artifacts=self._new_artifacts,
        )
        self._log_dirty = self._steps_dirty = False
        self._new_artifacts = []
        return progress

    def final_progress(self) -> Progress:
        """Everything the run reported, for the record of how it ended.

        The whole log and every step, whatever a heartbeat took before: that
        heartbeat may find the run already ended and save nothing of it. The
        artifacts are the ones not taken yet (a heartbeat keeps those it took).
        """
        progress = Progress(
            execution_id=self.execution_id,
            attempt=self.attempt,
            log=self.text(),
            cut_bytes=self._cut,
            # No steps reported: none were saved, so there is nothing to replace.
            steps=list(self._steps) if self._steps else None,
            artifacts=self._new_artifacts,
        )
        self._log_dirty = self._steps_dirty = False
        self._new_artifacts = []
        return progress

    def restore(self, progress: Progress) -> None:
        """Mark a progress that could not be saved as unsaved again."""
        self._log_dirty |= progress.log is not None
        self._steps_dirty |= progress.steps is not None
        self._new_artifacts = [*progress.artifacts, *self._new_artifacts]
