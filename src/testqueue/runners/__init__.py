"""The runner registry: kinds by name, from entry points or registered in code.

Third-party runners publish a class under the `testqueue.runners` entry point
group; the class is built once per process with the `Settings`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from testqueue import errors
from testqueue.config import Settings
from testqueue.runners.base import Runner

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "testqueue.runners"

RunnerFactory = Callable[[Settings], Runner]


class Registry:
    """The runners one process can use, built lazily on first use."""

    def __init__(self, settings: Settings, *, load_entry_points: bool = True) -> None:
        self._settings = settings
        self._factories: dict[str, RunnerFactory] = {}
        self._instances: dict[str, Runner] = {}
        self._broken: dict[str, str] = {}
        if load_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._factories[ep.name] = _lazy(ep.name, ep.load)

    def register(self, kind: str, factory: RunnerFactory) -> None:
        """Add or replace the runner for `kind`."""
        self._factories[kind] = factory
        self._instances.pop(kind, None)
        self._broken.pop(kind, None)

    def kinds(self) -> list[str]:
        return sorted(self._factories)

    def get(self, kind: str) -> Runner:
        """The runner for `kind`; `errors.RunnerUnavailable` says why there is none."""
        if kind in self._instances:
            return self._instances[kind]
        if kind in self._broken:
            raise errors.RunnerUnavailable(self._broken[kind])
        factory = self._factories.get(kind)
        if factory is None:
            raise errors.RunnerUnavailable(
                f"no runner of kind {kind!r} is installed on this worker"
            )
        try:
            runner = factory(self._settings)
        except Exception as exc:
            reason = f"the {kind!r} runner is not available on this worker: {exc}"
            log.warning("runner unavailable", extra={"kind": kind, "reason": str(exc)})
            self._broken[kind] = reason
            raise errors.RunnerUnavailable(reason) from exc
        self._instances[kind] = runner
        return runner

    async def close(self) -> None:
        for runner in self._instances.values():
            await runner.close()
        self._instances.clear()


def _lazy(kind: str, load: Callable[[], object]) -> RunnerFactory:
    def build(settings: Settings) -> Runner:
        cls = load()
        if not callable(cls):
            raise TypeError(f"entry point {kind!r} is not a runner class")
        runner: Runner = cls(settings)
        return runner

    return build
