"""The metric names the operator exports, as a scrape shows them."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

import dittofs_controller.kube.client
import dittofs_controller.operator.metrics
import dittofs_controller.runtime.metrics
from dittofs_controller.operator.metrics import server_families
from dittofs_controller.runtime.metrics import REGISTRY

# Imported for what importing them registers: the API client's and the per-server metrics.
REGISTERING = (dittofs_controller.kube.client, dittofs_controller.operator.metrics)
# The modules defining the operator's prometheus_client metrics (Counter, Gauge, Histogram).
DEFINING = (*REGISTERING, dittofs_controller.runtime.metrics)

# A DittoServer with one of every per-server series: a condition, a phase, a store's health.
EVERY_SERIES_SERVER = {
    "metadata": {"namespace": "ns", "name": "server", "generation": 1},
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}],
        "server": {"remoteBlockStores": [{"name": "s3", "health": "healthy"}]},
    },
}


def exported_metric_names() -> set[str]:
    """prometheus_client keeps a counter's family name without `_total`; a scrape has it."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in REGISTRY.collect()
    }


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name a scrape can show, with the label names the series carries: a
    counter's `_total`, a histogram's `_bucket` (with `le`), `_sum` and `_count`, a gauge as
    it is. (The `_created` timestamps are left out: no query needs them.)"""
    labels = _family_labels()
    series: dict[str, frozenset[str]] = {}
    for family in REGISTRY.collect():
        names = labels[family.name]
        if family.type == "counter":
            series[f"{family.name}_total"] = names
        elif family.type == "histogram":
            series[f"{family.name}_bucket"] = names | {"le"}
            series[f"{family.name}_sum"] = series[f"{family.name}_count"] = names
        elif family.type == "gauge":
            series[family.name] = names
        else:
            raise AssertionError(f"{family.name}: no series naming for type {family.type}")
    return series


def _family_labels() -> dict[str, frozenset[str]]:
    """Each family's label names: as declared by the metrics of DEFINING (prometheus_client has
    no public accessor for them), as seen on the per-server families for EVERY_SERIES_SERVER,
    and on the samples of the families that always have some (the process collector's)."""
    labels: dict[str, frozenset[str]] = {}
    for module in DEFINING:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                (family,) = value.describe()
                labels[family.name] = frozenset(value._labelnames)
    for family in [*server_families([EVERY_SERIES_SERVER]), *REGISTRY.collect()]:
        if family.samples and family.name not in labels:
            labels[family.name] = frozenset(
                name for sample in family.samples for name in sample.labels if name != "le"
            )
    unknown = sorted(family.name for family in REGISTRY.collect() if family.name not in labels)
    assert not unknown, f"label names unknown for {unknown}: add their module to DEFINING"
    return labels
