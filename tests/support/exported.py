"""The metric names the operator exports, as a scrape shows them."""

from __future__ import annotations

import dittofs_controller.kube.client
import dittofs_controller.operator.metrics
from dittofs_controller.runtime.metrics import REGISTRY

# Imported for what importing them registers: the API client's and the per-server metrics.
REGISTERING = (dittofs_controller.kube.client, dittofs_controller.operator.metrics)


def exported_metric_names() -> set[str]:
    """prometheus_client keeps a counter's family name without `_total`; a scrape has it."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in REGISTRY.collect()
    }
