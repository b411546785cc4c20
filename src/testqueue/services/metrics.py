"""Prometheus metrics: who may scrape them, and the exposition of one scrape.

Every figure about the queue is read from the database at the scrape (kept
tallies and index counts, `queue.counts`), so each API host reports the same
numbers and a restart loses nothing; nothing here is a metric object that
counts in memory. Only the process family (CPU, memory, open files) is this
process's own.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from testqueue import errors
from testqueue.config import Settings
from testqueue.database import Database
from testqueue.queue import counts as queue_counts
from testqueue.queue.counts import Counts
from testqueue.vocabulary import HIGHEST_PRIORITY, LOWEST_PRIORITY, DeliveryState

DELIVERY_STATES = tuple(state.value for state in DeliveryState)


def check_access(settings: Settings, authorization: str | None, client: str | None) -> None:
    """Let a scrape through with the metrics token or from an allowed address, else refuse.

    A token that is sent is checked even from an allowed address: a wrong one
    is a mistake worth hearing about.
    """
    token = settings.metrics_token
    if authorization:
        scheme, _, given = authorization.partition(" ")
        if token is None:
            raise errors.Unauthorized(
                "no METRICS_TOKEN is set on this server; scrape from an address in "
                "METRICS_ALLOW, or set METRICS_TOKEN and send it"
            )
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise errors.Unauthorized(
                "send Authorization: Bearer <METRICS_TOKEN>; this one is not it"
            )
        return
    if _allowed(settings, client):
        return
    if token is not None:
        raise errors.Unauthorized(
            f"{client or 'this address'} is not in METRICS_ALLOW; "
            "send Authorization: Bearer <METRICS_TOKEN>"
        )
    raise errors.Forbidden(
        f"{client or 'this address'} is not in METRICS_ALLOW "
        f"({', '.join(str(n) for n in settings.metrics_allow) or 'empty'}); add its network "
        "there, or set METRICS_TOKEN and send it as a bearer token"
    )


def _allowed(settings: Settings, client: str | None) -> bool:
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in settings.metrics_allow)


async def exposition(db: Database) -> bytes:
    """One scrape in the Prometheus text format: the queue's figures, then the process's."""
    counts = await queue_counts.read(db)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(counts))
    ProcessCollector(registry=registry)
    return generate_latest(registry)


class _Snapshot(Collector):
    """The families of one scrape, from figures already read."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        yield from _queue_families(self.counts)
        yield from _finished_families(self.counts)
        yield from _histograms(self.counts)
        yield from _beside_the_queue(self.counts)


def _queue_families(counts: Counts) -> Iterable[Metric]:
    pending = GaugeMetricFamily(
        "testqueue_pending", "Executions waiting in the line, by priority", labels=["priority"]
    )
    for priority in range(HIGHEST_PRIORITY, LOWEST_PRIORITY + 1):
        pending.add_metric([str(priority)], counts.pending_by_priority.get(priority, 0))
    yield pending
    yield GaugeMetricFamily("testqueue_running", "Executions running now", value=counts.running)
    yield GaugeMetricFamily("testqueue_slots", "Global slots in force", value=counts.slots)
    yield GaugeMetricFamily(
        "testqueue_paused", "1 while the queue is paused", value=int(counts.paused)
    )
    yield GaugeMetricFamily(
        "testqueue_live_workers",
        "Workers whose heartbeat is within the lease",
        value=counts.live_workers,
    )


def _finished_families(counts: Counts) -> Iterable[Metric]:
    finished = CounterMetricFamily(
        "testqueue_executions_finished",
        "Executions completed, by result and runner (deleting history does not lower it)",
        labels=["result", "runner"],
    )
    for (result, runner), n in sorted(counts.family("finished").items()):
        finished.add_metric([result, runner], n)
    yield finished
    for name, what in (
        ("cancelled", "Executions cancelled, waiting or running"),
        ("expired", "Executions that waited past their queue timeout and never started"),
        ("retried", "Retries: failed attempts put back in line by the test case's retries"),
        ("flaky", "Executions that passed only after a retry"),
    ):
        yield CounterMetricFamily(f"testqueue_executions_{name}", what, value=counts.total(name))


def _histograms(counts: Counts) -> Iterable[Metric]:
    for family, name, what in (
        ("wait_s", "testqueue_wait_seconds", "Completed executions' wait, queued to started"),
        ("run_s", "testqueue_run_seconds", "Completed executions' run, started to completed"),
    ):
        histogram = HistogramMetricFamily(name, what + ", by result", labels=["result"])
        for result, shown in sorted(counts.histograms(family).items()):
            buckets = [(_le(bound), n) for bound, n in shown.buckets]
            histogram.add_metric([result], buckets, shown.sum_s)
        yield histogram


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _beside_the_queue(counts: Counts) -> Iterable[Metric]:
    deliveries = GaugeMetricFamily(
        "testqueue_webhook_deliveries",
        "Webhook deliveries in the outbox, by state (pending, delivered, failed)",
        labels=["state"],
    )
    kept = {state: n for (state, _), n in counts.family("deliveries").items()}
    for state in sorted({*DELIVERY_STATES, *kept}):
        deliveries.add_metric([state], kept.get(state, 0))
    yield deliveries
    ticks = CounterMetricFamily(
        "testqueue_schedule_ticks",
        "Schedule ticks fired, by outcome (queued its batch, or failed with an error)",
        labels=["outcome"],
    )
    fired = {outcome: n for (outcome, _), n in counts.family("ticks").items()}
    for outcome in ("queued", "failed"):
        ticks.add_metric([outcome], fired.get(outcome, 0))
    yield ticks
