"""The layers, read from the source: dependencies point down, and only `queue.moves`
writes an execution's row.

    vocabulary <- models <- queue <- services, dispatcher <- api, web, cli
    runners see the vocabulary, config, errors and artifacts only
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "testqueue"


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        name = ".".join(("testqueue", *path.relative_to(SRC).with_suffix("").parts))
        yield name.removesuffix(".__init__"), ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = dict(_modules())
IMPORTS = {name: _imports(tree) for name, tree in MODULES.items()}


def _ours(name: str) -> set[str]:
    return {i for i in IMPORTS[name] if i == "testqueue" or i.startswith("testqueue.")}


def _within(imported: str, *prefixes: str) -> bool:
    return any(imported == p or imported.startswith(f"{p}.") for p in prefixes)


def test_the_vocabulary_imports_nothing_of_ours() -> None:
    assert _ours("testqueue.vocabulary") == set()


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("testqueue.runners")])
def test_runners_see_only_the_vocabulary_config_errors_and_artifacts(name: str) -> None:
    allowed = (
        "testqueue.vocabulary",
        "testqueue.config",
        "testqueue.errors",
        "testqueue.artifacts",
        "testqueue.runners",
    )
    wrong = {i for i in _ours(name) if not _within(i, *allowed) and i != "testqueue"}
    assert wrong == set(), f"{name} imports {sorted(wrong)}"


ABOVE_QUEUE = (
    "testqueue.api",
    "testqueue.web",
    "testqueue.cli",
    "testqueue.runners",
    "testqueue.services",
    "testqueue.dispatcher",
    "testqueue.app",
    "testqueue.state",
    "testqueue.recorder",
)


@pytest.mark.parametrize(
    "name", [n for n in MODULES if _within(n, "testqueue.queue", "testqueue.models")]
)
def test_the_queue_and_models_import_nothing_above_them(name: str) -> None:
    wrong = {i for i in _ours(name) if _within(i, *ABOVE_QUEUE)}
    assert wrong == set(), f"{name} imports {sorted(wrong)}"


@pytest.mark.parametrize("name", [n for n in MODULES if _within(n, "testqueue.services")])
def test_services_import_neither_api_web_nor_cli(name: str) -> None:
    wrong = {
        i for i in _ours(name) if _within(i, "testqueue.api", "testqueue.web", "testqueue.cli")
    }
    assert wrong == set(), f"{name} imports {sorted(wrong)}"


@pytest.mark.parametrize(
    ("side", "other"), [("testqueue.web", "testqueue.api"), ("testqueue.api", "testqueue.web")]
)
def test_the_api_and_the_dashboard_never_call_each_other(side: str, other: str) -> None:
    wrong = {
        (name, i)
        for name in MODULES
        if _within(name, side)
        for i in _ours(name)
        if _within(i, other)
    }
    assert wrong == set()


@pytest.mark.parametrize("name", [n for n in MODULES if _within(n, "testqueue.client")])
def test_the_ci_client_knows_the_server_only_by_its_http_api(name: str) -> None:
    wrong = {i for i in _ours(name) if not _within(i, "testqueue.client")}
    assert wrong == set(), f"{name} imports {sorted(wrong)}"


def test_nothing_imports_tests_or_benchmarks() -> None:
    ours = {
        "conftest",
        "gates",
        "waiting",
        "process",
        "spans",
        "served",
        "noop_server",
        "junit",
        "proxy",
    }
    wrong = {
        (name, i)
        for name, found in IMPORTS.items()
        for i in found
        if i.split(".")[0] in ours or i.startswith(("tests", "bench"))
    }
    assert wrong == set()


def _writes_to_executions(tree: ast.Module) -> list[int]:
    """Lines that call update(E) / update(Execution) or insert(...) into executions."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "update"
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in {"E", "Execution"}
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_moves_module_writes_updates_to_executions() -> None:
    writers = {
        name: lines for name, tree in MODULES.items() if (lines := _writes_to_executions(tree))
    }
    assert set(writers) == {"testqueue.queue.moves"}, writers
