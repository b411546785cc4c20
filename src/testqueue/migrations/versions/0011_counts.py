"""tallies: counts kept as executions change: statistics and metrics without scanning the table

Counting a million finished executions by status and result takes seconds;
reading a few kept numbers takes microseconds. Triggers on `executions` keep
them in the same transaction as every change, whatever path makes it
(finish, cancel, expire, clear, recovery, retry, deleting rows), so they
cannot drift from the rows. One row of `tallies` is one number:

- `rows` (status, result): finished executions now in the table; a deleted
  row leaves it, so it always equals a recount;
- `finished` (result, runner), `cancelled`, `expired`, `flaky`, `retried`:
  how many ever did so; deleting rows leaves these alone (Prometheus counters
  never go down);
- `wait_s` and `run_s` (result, bucket): the wait (queued to started) and run
  (started to completed) of every completed execution, one row per histogram
  bucket (`BUCKETS_S`) with the count and the sum of seconds in it;
- `deliveries` (state): webhook deliveries now in the table by state;
  `ticks` (queued or failed): schedule ticks ever fired.

SQLite has one writer at a time, so its triggers add to `tallies` directly.
On PostgreSQL many hosts finish, cancel and expire at once, and adding to
shared rows would make them wait on each other's row locks (and could
deadlock two transactions that touch two rows in opposite orders), so its
trigger only appends a change to `tally_deltas`, which takes no lock another
writer wants. A reader sums both and folds the deltas into `tallies` now and
then (`queue.counts`).

A later SQLite batch migration that recreates `executions` drops these
triggers and must create them again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Upper bounds of the histogram buckets, in seconds; `queue.counts.BUCKETS_S` reads them.
BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
FINAL = "('completed', 'cancelled', 'expired')"
UPSERT = (
    "ON CONFLICT (family, label, detail) DO UPDATE "
    "SET n = n + excluded.n, sum_s = sum_s + excluded.sum_s"
)


def _bucket(seconds: str) -> str:
    """The label of the smallest bucket that holds `seconds`."""
    steps = " ".join(f"WHEN {seconds} <= {b} THEN '{b}'" for b in BUCKETS_S)
    return f"CASE {steps} ELSE '+Inf' END"


# -- SQLite: row triggers that add to `tallies` -------------------------------------------


def _sqlite_add(family: str, label: str, detail: str, n: str, when: str, seconds: str = "0") -> str:
    # `WHERE` before `ON CONFLICT` also settles SQLite's INSERT ... SELECT upsert parse.
    return (
        "INSERT INTO tallies (family, label, detail, n, sum_s) "
        f"SELECT {family}, {label}, {detail}, {n}, {seconds} WHERE {when} {UPSERT};"
    )


def _sqlite_durations(row: str) -> tuple[str, str]:
    wait = f"((julianday({row}.started_at) - julianday({row}.queued_at)) * 86400.0)"
    run = f"((julianday({row}.completed_at) - julianday({row}.started_at)) * 86400.0)"
    return wait, run


def _sqlite_finish(row: str = "NEW") -> str:
    """What an execution adds when it becomes final: every family but `rows`."""
    result = f"coalesce({row}.result, '')"
    runner = f"coalesce((SELECT runner FROM test_cases WHERE id = {row}.test_case_id), '')"
    done = f"{row}.status = 'completed'"
    timed = f"{done} AND {row}.started_at IS NOT NULL"
    wait, run = _sqlite_durations(row)
    return " ".join(
        [
            _sqlite_add("'finished'", result, runner, "1", done),
            _sqlite_add(f"{row}.status", "''", "''", "1", f"{row}.status <> 'completed'"),
            _sqlite_add("'flaky'", "''", "''", "1", f"{done} AND {row}.flaky"),
            _sqlite_add("'wait_s'", result, _bucket(wait), "1", timed, wait),
            _sqlite_add("'run_s'", result, _bucket(run), "1", timed, run),
        ]
    )


def _sqlite_rows(row: str, n: str) -> str:
    return _sqlite_add("'rows'", f"{row}.status", f"coalesce({row}.result, '')", n, "1")


SQLITE_TRIGGERS = {
    "tallies_insert": (
        f"AFTER INSERT ON executions WHEN NEW.status IN {FINAL} "
        f"BEGIN {_sqlite_rows('NEW', '1')} {_sqlite_finish()} END"
    ),
    "tallies_delete": (
        f"AFTER DELETE ON executions WHEN OLD.status IN {FINAL} "
        f"BEGIN {_sqlite_rows('OLD', '-1')} END"
    ),
    # An UPDATE of a final row's result (none is made) leaves one count and joins another.
    "tallies_leave": (
        f"AFTER UPDATE OF status, result ON executions WHEN OLD.status IN {FINAL} "
        f"BEGIN {_sqlite_rows('OLD', '-1')} END"
    ),
    "tallies_enter": (
        f"AFTER UPDATE OF status, result ON executions WHEN NEW.status IN {FINAL} "
        f"BEGIN {_sqlite_rows('NEW', '1')} END"
    ),
    "tallies_finish": (
        f"AFTER UPDATE OF status ON executions "
        f"WHEN NEW.status IN {FINAL} AND OLD.status NOT IN {FINAL} "
        f"BEGIN {_sqlite_finish()} END"
    ),
    "tallies_retry": (
        "AFTER UPDATE OF retried ON executions WHEN NEW.retried > OLD.retried "
        "BEGIN " + _sqlite_add("'retried'", "''", "''", "NEW.retried - OLD.retried", "1") + " END"
    ),
    "tallies_insert_retried": (
        "AFTER INSERT ON executions WHEN NEW.retried > 0 "
        "BEGIN " + _sqlite_add("'retried'", "''", "''", "NEW.retried", "1") + " END"
    ),
}

# -- PostgreSQL: one row trigger function that appends to `tally_deltas` ------------------

PG_WAIT = "extract(epoch FROM NEW.started_at - NEW.queued_at)"
PG_RUN = "extract(epoch FROM NEW.completed_at - NEW.started_at)"
PG_FUNCTION = f"""
CREATE FUNCTION tally_execution() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    wait_s double precision;
    run_s double precision;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN {FINAL} THEN
        INSERT INTO tally_deltas (family, label, detail, n, sum_s)
        VALUES ('rows', OLD.status, coalesce(OLD.result, ''), -1, 0);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN NULL;
    END IF;
    IF NEW.status IN {FINAL} THEN
        INSERT INTO tally_deltas (family, label, detail, n, sum_s)
        VALUES ('rows', NEW.status, coalesce(NEW.result, ''), 1, 0);
    END IF;
    IF TG_OP = 'INSERT' AND NEW.retried > 0 THEN
        INSERT INTO tally_deltas (family, label, detail, n, sum_s)
        VALUES ('retried', '', '', NEW.retried, 0);
    ELSIF TG_OP = 'UPDATE' AND NEW.retried > OLD.retried THEN
        INSERT INTO tally_deltas (family, label, detail, n, sum_s)
        VALUES ('retried', '', '', NEW.retried - OLD.retried, 0);
    END IF;
    IF NEW.status NOT IN {FINAL} OR (TG_OP = 'UPDATE' AND OLD.status IN {FINAL}) THEN
        RETURN NULL;
    END IF;
    IF NEW.status <> 'completed' THEN
        INSERT INTO tally_deltas (family, label, detail, n, sum_s)
        VALUES (NEW.status, '', '', 1, 0);
        RETURN NULL;
    END IF;
    SELECT t.runner INTO kind FROM test_cases t WHERE t.id = NEW.test_case_id;
    INSERT INTO tally_deltas (family, label, detail, n, sum_s)
    VALUES ('finished', coalesce(NEW.result, ''), coalesce(kind, ''), 1, 0);
    IF NEW.flaky THEN
        INSERT INTO tally_deltas (family, label, detail, n, sum_s)
        VALUES ('flaky', '', '', 1, 0);
    END IF;
    IF NEW.started_at IS NOT NULL THEN
        wait_s := {PG_WAIT};
        run_s := {PG_RUN};
        INSERT INTO tally_deltas (family, label, detail, n, sum_s) VALUES
            ('wait_s', coalesce(NEW.result, ''), {_bucket("wait_s")}, 1, wait_s),
            ('run_s', coalesce(NEW.result, ''), {_bucket("run_s")}, 1, run_s);
    END IF;
    RETURN NULL;
END
$$
"""
PG_TRIGGERS = {
    "tallies_insert": f"AFTER INSERT ON executions FOR EACH ROW "
    f"WHEN (NEW.status IN {FINAL} OR NEW.retried > 0)",
    "tallies_delete": f"AFTER DELETE ON executions FOR EACH ROW WHEN (OLD.status IN {FINAL})",
    # Claims and lease renewals change none of these columns' values and cost no call.
    "tallies_update": f"AFTER UPDATE OF status, result, retried ON executions FOR EACH ROW "
    f"WHEN (OLD.status IN {FINAL} OR NEW.status IN {FINAL} OR NEW.retried > OLD.retried)",
}

# -- beside the queue: webhook deliveries by state, schedule ticks -------------------------

TICK = "CASE WHEN NEW.error IS NULL THEN 'queued' ELSE 'failed' END"
SQLITE_BESIDE = {
    "tallies_delivery_insert": "AFTER INSERT ON webhook_deliveries BEGIN "
    + _sqlite_add("'deliveries'", "NEW.state", "''", "1", "1")
    + " END",
    "tallies_delivery_delete": "AFTER DELETE ON webhook_deliveries BEGIN "
    + _sqlite_add("'deliveries'", "OLD.state", "''", "-1", "1")
    + " END",
    "tallies_delivery_state": "AFTER UPDATE OF state ON webhook_deliveries "
    "WHEN NEW.state <> OLD.state BEGIN "
    + _sqlite_add("'deliveries'", "OLD.state", "''", "-1", "1")
    + " "
    + _sqlite_add("'deliveries'", "NEW.state", "''", "1", "1")
    + " END",
    "tallies_tick": "AFTER INSERT ON schedule_fires BEGIN "
    + _sqlite_add("'ticks'", TICK, "''", "1", "1")
    + " END",
}
PG_BESIDE_FUNCTIONS = {
    "tally_delivery": """
CREATE FUNCTION tally_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO tally_deltas (family, label, detail, n, sum_s)
        VALUES ('deliveries', OLD.state, '', -1, 0);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO tally_deltas (family, label, detail, n, sum_s)
        VALUES ('deliveries', NEW.state, '', 1, 0);
    END IF;
    RETURN NULL;
END
$$
""",
    "tally_tick": f"""
CREATE FUNCTION tally_tick() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_deltas (family, label, detail, n, sum_s) VALUES ('ticks', {TICK}, '', 1, 0);
    RETURN NULL;
END
$$
""",
}
# name: (table, when, function)
PG_BESIDE = {
    "tallies_delivery_change": (
        "webhook_deliveries",
        "AFTER INSERT OR DELETE ON webhook_deliveries FOR EACH ROW",
        "tally_delivery",
    ),
    "tallies_delivery_state": (
        "webhook_deliveries",
        "AFTER UPDATE OF state ON webhook_deliveries FOR EACH ROW "
        "WHEN (NEW.state IS DISTINCT FROM OLD.state)",
        "tally_delivery",
    ),
    "tallies_tick": ("schedule_fires", "AFTER INSERT ON schedule_fires FOR EACH ROW", "tally_tick"),
}
BESIDE_BACKFILL = [
    "INSERT INTO tallies (family, label, detail, n, sum_s) "
    "SELECT 'deliveries', state, '', count(*), 0 FROM webhook_deliveries GROUP BY state",
    "INSERT INTO tallies (family, label, detail, n, sum_s) "
    f"SELECT 'ticks', {TICK.replace('NEW.', '')}, '', count(*), 0 FROM schedule_fires GROUP BY 2",
]

# -- the backfill: what the triggers would have kept, from the rows there are --------------


def _backfill(wait: str, run: str) -> list[str]:
    """INSERT ... SELECT statements that count the existing executions into `tallies`."""
    into = "INSERT INTO tallies (family, label, detail, n, sum_s) "
    final = f"status IN {FINAL}"
    done = "status = 'completed' AND started_at IS NOT NULL"
    runner = "coalesce((SELECT runner FROM test_cases t WHERE t.id = e.test_case_id), '')"
    histogram = (
        "SELECT '{family}', result, {bucket}, count(*), coalesce(sum(s), 0) FROM "
        "(SELECT coalesce(result, '') AS result, {seconds} AS s FROM executions "
        f"WHERE {done}) AS d GROUP BY 1, 2, 3"
    )
    return [
        into + "SELECT 'rows', status, coalesce(result, ''), count(*), 0 FROM executions "
        f"WHERE {final} GROUP BY 1, 2, 3",
        into + f"SELECT 'finished', coalesce(result, ''), {runner}, count(*), 0 "
        "FROM executions e WHERE status = 'completed' GROUP BY 1, 2, 3",
        into + "SELECT status, '', '', count(*), 0 FROM executions "
        "WHERE status IN ('cancelled', 'expired') GROUP BY 1",
        into + "SELECT 'flaky', '', '', count(*), 0 FROM executions "
        "WHERE status = 'completed' AND flaky HAVING count(*) > 0",
        into + "SELECT 'retried', '', '', sum(retried), 0 FROM executions "
        "WHERE retried > 0 HAVING count(*) > 0",
        into + histogram.format(family="wait_s", bucket=_bucket("s"), seconds=wait),
        into + histogram.format(family="run_s", bucket=_bucket("s"), seconds=run),
    ]


def upgrade() -> None:
    op.create_table(
        "tallies",
        sa.Column("family", sa.String(16), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("sum_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("family", "label", "detail"),
    )
    op.create_table(
        "tally_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("family", sa.String(16), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("sum_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    if op.get_bind().dialect.name == "sqlite":
        wait, run = (s.replace("NEW.", "") for s in _sqlite_durations("NEW"))
        for statement in [*_backfill(wait, run), *BESIDE_BACKFILL]:
            op.execute(statement)
        for name, body in {**SQLITE_TRIGGERS, **SQLITE_BESIDE}.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        return
    # The triggers go in first, under locks that hold every writer off until the
    # backfill has counted: no change is lost between the two or counted twice.
    for table in ("executions", "webhook_deliveries", "schedule_fires"):
        op.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    for function in (PG_FUNCTION, *PG_BESIDE_FUNCTIONS.values()):
        op.execute(function)
    for name, when in PG_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION tally_execution()")
    for name, (_table, when, function) in PG_BESIDE.items():
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {function}()")
    wait, run = PG_WAIT.replace("NEW.", ""), PG_RUN.replace("NEW.", "")
    for statement in [*_backfill(wait, run), *BESIDE_BACKFILL]:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in {**SQLITE_TRIGGERS, **SQLITE_BESIDE}:
            op.execute(f"DROP TRIGGER {name}")
    else:
        for name in PG_TRIGGERS:
            op.execute(f"DROP TRIGGER {name} ON executions")
        for name, (table, _when, _function) in PG_BESIDE.items():
            op.execute(f"DROP TRIGGER {name} ON {table}")
        for function in ("tally_execution", *PG_BESIDE_FUNCTIONS):
            op.execute(f"DROP FUNCTION {function}()")
    op.drop_table("tally_deltas")
    op.drop_table("tallies")
