"""The network concern: how NFS, SMB and the REST API are reached (see reconciler.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dittofs_controller.kube.resources import DITTOSERVERS, INGRESSES, NETWORKPOLICIES, SERVICES
from dittofs_controller.operator.base import Context, owned_children, server_controller
from dittofs_controller.operator.network.reconciler import NetworkReconciler

if TYPE_CHECKING:
    from dittofs_controller.manager import Manager


def setup(manager: Manager, ctx: Context) -> None:
    """Register the network controller; edits to its children (and load-balancer addresses
    landing in a Service's status) re-trigger the owning DittoServer."""
    caches = {
        resource: owned_children(manager, resource)
        for resource in (SERVICES, INGRESSES, NETWORKPOLICIES)
    }
    controller = server_controller(manager, NetworkReconciler(ctx, caches))
    for cache in caches.values():
        controller.owns(cache, DITTOSERVERS)
