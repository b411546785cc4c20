# The README's two commands are `make run` and `make test`; the rest are shortcuts.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint fmt typecheck bench bench-quick clean

$(BIN)/testqueue: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

run: $(BIN)/testqueue  ## serve API, dashboard and a worker on ./testqueue.db
	$(BIN)/testqueue serve --host $(HOST) --port $(PORT)

test: $(BIN)/testqueue  ## every test, on SQLite and PostgreSQL, in a real Chromium
	scripts/ensure-chromium.sh
	scripts/ensure-postgres.sh
	$(BIN)/pytest

lint: $(BIN)/testqueue
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: $(BIN)/testqueue
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(BIN)/testqueue
	$(BIN)/python bench/queue_bench.py
	$(BIN)/python bench/request_path.py

bench-quick: $(BIN)/testqueue
	$(BIN)/python bench/queue_bench.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
