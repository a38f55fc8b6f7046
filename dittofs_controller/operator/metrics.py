"""Per-DittoServer metrics: what an SRE alerts on, beside the runtime's controller metrics.

Conditions and phases are read from the DittoServer cache at scrape time (as kube-state-metrics
reads objects), so a deleted server's series go with it and nothing has to be kept in step.
Every replica exports them, the standbys from their warm caches: aggregate with `max by`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dittofs_controller.kube.resources import ObjectKey
from dittofs_controller.operator.conditions import PHASES, STATUSES, Obj
from dittofs_controller.runtime.metrics import REGISTRY

API_ERRORS = Counter(
    "dittofs_server_api_errors_total",
    "Passes whose DittoFS REST API calls failed, by kind: authentication (the admin login was "
    "refused), unreachable (no answer), server_error (an unexpected answer).",
    ["namespace", "name", "kind"],
    registry=REGISTRY,
)
API_ERROR_KINDS = ("authentication", "unreachable", "server_error")

# What DittoFS reports of a store or share (status.server, each entry's `health`).
HEALTH_VALUES = ("healthy", "degraded", "unhealthy", "unknown")

CONVERGENCE = Histogram(
    "dittofs_server_convergence_seconds",
    "Seconds from the operator first seeing a generation of a DittoServer's spec to Ready=True "
    "for it (generations seen before the operator started are not counted).",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)


def count_api_error(meta: Obj, kind: str) -> None:
    """One failed pass against a server's REST API (`kind` of API_ERROR_KINDS)."""
    API_ERRORS.labels(meta["namespace"], meta["name"], kind).inc()


def forget_server(key: ObjectKey) -> None:
    """Drop a deleted server's API error series."""
    for kind in API_ERROR_KINDS:
        with contextlib.suppress(KeyError):  # no error of that kind was counted
            API_ERRORS.remove(key.namespace, key.name, kind)


def server_families(servers: Iterable[Obj]) -> list[GaugeMetricFamily]:
    """Pure: one 0/1 series per condition status and per phase, for each server."""
    condition = GaugeMetricFamily(
        "dittofs_server_condition",
        "1 for the status a DittoServer's condition has (True, False or Unknown), 0 for the "
        "others.",
        labels=["namespace", "name", "condition", "status"],
    )
    phase = GaugeMetricFamily(
        "dittofs_server_phase",
        "1 for a DittoServer's phase (status.phase), 0 for the other phases.",
        labels=["namespace", "name", "phase"],
    )
    stale = GaugeMetricFamily(
        "dittofs_server_generation_pending",
        "1 while Ready has not yet judged the latest generation of the spec (an edit in "
        "progress), else 0.",
        labels=["namespace", "name"],
    )
    health = GaugeMetricFamily(
        "dittofs_server_health",
        "1 for the health DittoFS reports of a store or share (status.server: healthy, "
        "degraded, unhealthy or unknown), 0 for the others; kind is the status.server list.",
        labels=["namespace", "name", "kind", "item", "health"],
    )
    for server in servers:
        meta = server["metadata"]
        labels = [meta["namespace"], meta["name"]]
        status = server.get("status") or {}
        for kind, items in (status.get("server") or {}).items():
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict) and "health" in item:
                    for value in HEALTH_VALUES:
                        health.add_metric(
                            [*labels, kind, str(item.get("name")), value],
                            float(item["health"] == value),
                        )
        ready_generation = None
        for entry in status.get("conditions") or ():
            for value in STATUSES:
                condition.add_metric(
                    [*labels, entry["type"], value], float(entry.get("status") == value)
                )
            if entry["type"] == "Ready":
                ready_generation = entry.get("observedGeneration")
        current = status.get("phase")
        for name in PHASES:
            phase.add_metric([*labels, name], float(current == name))
        pending = ready_generation != meta.get("generation")
        stale.add_metric(labels, float(pending))
    return [condition, phase, stale, health]


class ServerCollector(Collector):
    """Reads the DittoServers of the running operator at each scrape."""

    def __init__(self) -> None:
        self.source: Callable[[], list[Obj]] = list

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from server_families(self.source())


SERVERS = ServerCollector()
REGISTRY.register(SERVERS)
