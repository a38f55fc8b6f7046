"""Prometheus metrics, named exactly as controller-runtime names them.

Matching names lets the usual controller-runtime dashboards and alerts work unchanged. Everything
is registered on this project's own ``REGISTRY`` rather than prometheus_client's global default,
so importing other libraries cannot leak their metrics into ours and tests can read exact values.
Like controller-runtime's registry it also carries the process's own ``process_*`` series (CPU
seconds, resident memory, file descriptors; read from /proc, so Linux only).

Controller usage (one reconcile pass of controller ``ctl``)::

    init_controller_metrics(ctl, max_concurrent_reconciles=n)   # once, at controller start
    ACTIVE_WORKERS.labels(ctl).inc()                              # worker picked up a key
    with RECONCILE_TIME.labels(ctl).time(): ...reconcile...
    RECONCILE_TOTAL.labels(ctl, result).inc()  # success | error | requeue | requeue_after
    RECONCILE_ERRORS.labels(ctl).inc()         # also on every error, terminal or not
    TERMINAL_RECONCILE_ERRORS.labels(ctl).inc()  # additionally when the error is terminal
    ACTIVE_WORKERS.labels(ctl).dec()

``LEADER_ELECTION_MASTER_STATUS.labels(lease).set(1 or 0)`` follows leadership. The work queue
records the ``workqueue_*`` metrics itself through ``QueueMetrics``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

# prometheus.ExponentialBuckets(10e-9, 10, 12): 10 ns .. 1000 s, as client-go's workqueue uses.
WORKQUEUE_BUCKETS = tuple(10.0**exp for exp in range(-8, 4))
# controller-runtime's controller_runtime_reconcile_time_seconds buckets.
RECONCILE_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    *(0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5),
    *(5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0),
)

WORKQUEUE_DEPTH = Gauge(
    "workqueue_depth",
    "Current depth of workqueue",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_ADDS = Counter(
    "workqueue_adds_total",
    "Total number of adds handled by workqueue",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries_total",
    "Total number of retries handled by workqueue",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested",
    ["name"],
    buckets=WORKQUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes.",
    ["name"],
    buckets=WORKQUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_UNFINISHED_WORK = Gauge(
    "workqueue_unfinished_work_seconds",
    "How many seconds of work has been done that is in progress and hasn't been observed by "
    "work_duration. Large values indicate stuck threads. One can deduce the number of stuck "
    "threads by observing the rate at which this increases.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_LONGEST_RUNNING_PROCESSOR = Gauge(
    "workqueue_longest_running_processor_seconds",
    "How many seconds has the longest running processor for workqueue been running.",
    ["name"],
    registry=REGISTRY,
)

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
TERMINAL_RECONCILE_ERRORS = Counter(
    "controller_runtime_terminal_reconcile_errors_total",
    "Total number of terminal reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=RECONCILE_BUCKETS,
    registry=REGISTRY,
)
MAX_CONCURRENT_RECONCILES = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    ["controller"],
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    ["controller"],
    registry=REGISTRY,
)
LEADER_ELECTION_MASTER_STATUS = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
    "1 indicates master. 'name' is the string used to identify the lease. "
    "Please make sure to group by name.",
    ["name"],
    registry=REGISTRY,
)

RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")


def init_controller_metrics(controller: str, max_concurrent_reconciles: int) -> None:
    """Publish a controller's series at zero, so rate() and alerts work before the first event."""
    for result in RECONCILE_RESULTS:
        RECONCILE_TOTAL.labels(controller, result)
    RECONCILE_ERRORS.labels(controller)
    TERMINAL_RECONCILE_ERRORS.labels(controller)
    ACTIVE_WORKERS.labels(controller).set(0)
    MAX_CONCURRENT_RECONCILES.labels(controller).set(max_concurrent_reconciles)


class QueueMetrics:
    """The ``workqueue_*{name}`` series of one queue, fed by the queue's add/get/done events.

    The two "how long has work been running" gauges are computed when scraped, from the start
    times of keys being processed, so there is no background updater to run or stop.
    """

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}
        self._depth = WORKQUEUE_DEPTH.labels(name)
        self._adds = WORKQUEUE_ADDS.labels(name)
        self._retries = WORKQUEUE_RETRIES.labels(name)
        self._queue_duration = WORKQUEUE_QUEUE_DURATION.labels(name)
        self._work_duration = WORKQUEUE_WORK_DURATION.labels(name)
        self._depth.set(0)
        WORKQUEUE_UNFINISHED_WORK.labels(name).set_function(self._unfinished_seconds)
        WORKQUEUE_LONGEST_RUNNING_PROCESSOR.labels(name).set_function(self._longest_seconds)

    def added(self, key: Hashable) -> None:
        """A key became pending; the queue calls this once per pending spell, not per add."""
        self._depth.inc()
        self._adds.inc()
        self._added_at[key] = self._clock()

    def handed_out(self, key: Hashable) -> None:
        """A worker took the key: its wait ends and its work starts."""
        now = self._clock()
        self._depth.dec()
        added_at = self._added_at.pop(key, None)
        if added_at is not None:
            self._queue_duration.observe(now - added_at)
        self._started_at[key] = now

    def done(self, key: Hashable) -> None:
        started_at = self._started_at.pop(key, None)
        if started_at is not None:
            self._work_duration.observe(self._clock() - started_at)

    def retried(self) -> None:
        self._retries.inc()

    def _running_for(self) -> list[float]:
        # Scrapes may come from the exporter's thread; list() copies the values in one C-level
        # step, so the event loop cannot resize the dict under the iteration.
        now = self._clock()
        return [now - started for started in list(self._started_at.values())]

    def _unfinished_seconds(self) -> float:
        return sum(self._running_for())

    def _longest_seconds(self) -> float:
        return max(self._running_for(), default=0.0)
