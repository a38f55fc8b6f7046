"""The network concern: how NFS, SMB, the REST API and metrics are reached (see reconciler.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dittofs_controller.kube.resources import (
    DITTOSERVERS,
    INGRESSES,
    NETWORKPOLICIES,
    SERVICE_MONITORS,
    SERVICES,
)
from dittofs_controller.operator.base import Context, owned_children, server_controller
from dittofs_controller.operator.children import MANAGED_SELECTOR
from dittofs_controller.operator.network.reconciler import NetworkReconciler, monitoring_servers

if TYPE_CHECKING:
    from dittofs_controller.runtime.manager import Manager


def setup(manager: Manager, ctx: Context) -> None:
    """Register the network controller; edits to its children (and load-balancer addresses
    landing in a Service's status) re-trigger the owning DittoServer. The ServiceMonitor CRD
    may be missing: its cache is optional, and the CRD appearing or going re-triggers the
    DittoServers that ask for a ServiceMonitor."""
    caches = {
        resource: owned_children(manager, resource)
        for resource in (SERVICES, INGRESSES, NETWORKPOLICIES)
    }
    monitors = manager.optional_cache(SERVICE_MONITORS, MANAGED_SELECTOR)
    controller = server_controller(manager, NetworkReconciler(ctx, caches, monitors))
    for cache in caches.values():
        controller.owns(cache, DITTOSERVERS)
    controller.owns(monitors, DITTOSERVERS)
    controller.watch(monitors.crd, monitoring_servers(ctx.servers))
